"""OpenAPI extensions: the API-key authentication as a bearer security scheme."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "An API key: `Authorization: Bearer cdp_<prefix>_<secret>`"}


class StaffSessionScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.StaffSessionAuthentication"
    name = "staffSession"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": "sessionid",
                "description": "The admin's session, staff only"}
