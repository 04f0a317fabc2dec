"""The service's routers, one module per group of endpoints, each built from the shared `Service`.

Every module exposes `router(service: Service) -> APIRouter`; `serving.app.create_app` includes
them in order. See `serving.app` for how to add one.
"""
