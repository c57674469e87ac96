"""Batch AI's REST API (2018-05-01, under ARM paths) over the Service: app.py builds it; serve.py or the UI plugin serves it."""
