"""OAuth 2.0: the built-in authorization server, the resource server and the client registry."""
