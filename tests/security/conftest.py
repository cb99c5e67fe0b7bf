"""Security tests: one service shared by a module (schemathesis and the role matrix make many calls)."""
