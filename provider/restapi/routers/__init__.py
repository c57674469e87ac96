"""The REST API's routes, one router per resource; app.py includes them in order."""
