"""The API's routers, one per concern; genlab.server.app.create_app assembles them."""
