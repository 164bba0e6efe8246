"""SQLWorld end to end: the demo (one FineStep run, a report and a viewer) and the estimator comparison."""
