"""Loopspot router agent: captive portal, nftables gate and session keeping for OpenWrt."""

__version__ = "0.1.0"
