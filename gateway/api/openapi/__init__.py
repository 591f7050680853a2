"""The OpenAPI 3.1 document: built from the app's route table, each route with the operation its
handler describes (gateway.http.describe), and the shared components (tests/api/test_openapi.py
holds it against a live gateway)."""
