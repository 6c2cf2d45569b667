# nbgrader's settings for the wslab course: run every nbgrader command from this folder (course/).
c = get_config()  # noqa: F821 (nbgrader provides get_config)

c.CourseDirectory.course_id = "wslab"
# A check is bounded (a few seconds); a cell still running after this long is stuck, and scores 0.
c.ExecutePreprocessor.timeout = 60
