"""The synthetic partnership behind `neglect-service demo-data` (`generator`)."""
