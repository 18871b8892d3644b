"""Coupons bound to a phone: signed tokens, short codes, campaign rules, offline checks."""
