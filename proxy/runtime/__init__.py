"""The gateway's configuration at run time: the config file and process settings, validated;
the resolved state requests read (tenants, calibrators, models); hot reload."""
