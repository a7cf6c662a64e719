"""The shared core every layer uses: settings, entities, SDK clients, the fixed vocabulary, the message contract.

It imports nothing of ours from above (a test checks the import graph), so the service path, the operator
commands and the dashboard all stand on the same definitions.
"""
