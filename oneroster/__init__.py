"""OneRoster 1.2 rostering (read-only) at /ims/oneroster/rostering/v1p2, with OAuth 2.0 client credentials at
/oauth/token: the roster API that third-party school apps already speak."""
