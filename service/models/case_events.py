"""Case events from the council's case system (owned by the case-events work; see SPEC 2.4)."""
