"""Running a suite: the runner plans builds and measurements and hands them to an executor as jobs."""
