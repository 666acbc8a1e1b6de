"""The clinician's record of a session: the session log, the end-of-session report and the export."""
