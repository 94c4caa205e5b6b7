"""Test helpers shipped with dynamips_mgr."""
