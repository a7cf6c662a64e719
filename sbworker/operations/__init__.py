"""What operators do, without argparse: publish messages, read instances (status, list, watch), work the
dead-letter queue. The `sbworker` commands and the dashboard both call these, so the two behave alike.
"""
