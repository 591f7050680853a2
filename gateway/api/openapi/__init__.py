"""The OpenAPI 3.1 document: the paths of the consumer and admin APIs, the shapes they share,
and the endpoint that serves it (tests/api/test_openapi.py holds it against the routes).
"""
