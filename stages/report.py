"""DVC stage `report`: reports/report.md and its figures from the metrics files -> clcae/report.py."""
from clcae.config import stage_main
from clcae.report import run

if __name__ == "__main__":
    stage_main(run)
