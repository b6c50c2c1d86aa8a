"""DVC stage `report` of seeds/dvc.yaml: the claims across training seeds -> clcae/pipeline/seed_report.py."""
from clcae.pipeline import stage_main
from clcae.pipeline.seed_report import report

if __name__ == "__main__":
    stage_main(report)
