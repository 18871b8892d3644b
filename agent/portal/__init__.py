"""The captive portal."""
