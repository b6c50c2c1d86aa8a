"""DVC stage `report` of seeds/dvc.yaml: the claims across training seeds -> clcae/seed_report.py."""
from clcae.config import stage_main
from clcae.seed_report import report

if __name__ == "__main__":
    stage_main(report)
