"""DVC stage `report`: reports/report.md and its figures from the metrics files -> clcae/pipeline/report.py."""
from clcae.pipeline import stage_main
from clcae.pipeline.report import run

if __name__ == "__main__":
    stage_main(run)
