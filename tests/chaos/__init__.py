"""Seeded fault campaigns over the embedded stack, and a checker that judges the whole recorded history."""
