"""Updates of the Perch SD-card image through RAUC: install, status, failed-update detection, release feed and the
Home Assistant `update` entity. Nothing here writes a slot itself: RAUC does, and its signature check comes first."""
