"""Running a sweep on Ray: the driver, the trial that runs on a worker, the recorder."""
