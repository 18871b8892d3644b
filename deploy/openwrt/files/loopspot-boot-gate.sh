#!/bin/sh
# Hold the LAN captive from boot until the agent runs.
#
# The agent's nftables table lives in the kernel, so a reboot empties it, and the agent
# (a Python program, START=95) comes up long after the LAN does. Until then every phone
# would be online unfiltered. The agent keeps on flash the table it installs, with no
# client in it; this loads that file, early in the boot (loopspot-gate, START=19), unless
# the table is there already. Phones that had sessions get them back when the agent starts.
#
# Usage: boot-gate [FILE]     FILE: the table to load (default <flash_dir>/captive-at-boot.nft)
# Exit:  0 loaded, or nothing to do; 1 nft refused the file

DEFAULT_FLASH_DIR=/etc/loopspot
BOOT_GATE_FILE=captive-at-boot.nft # agent/gate/gate.py writes it
TABLE="inet loopspot"

say() {
	echo "boot-gate: $*" >&2
	command -v logger >/dev/null 2>&1 && logger -t loopspot "boot-gate: $*"
	return 0
}

file=$1
if [ -z "$file" ]; then
	flash_dir=$(uci -q get loopspot.agent.flash_dir 2>/dev/null) || flash_dir=$DEFAULT_FLASH_DIR
	file="$flash_dir/$BOOT_GATE_FILE"
fi
if [ ! -f "$file" ]; then
	exit 0 # the agent has not run yet: there is no portal to send phones to either
fi
# shellcheck disable=SC2086 # TABLE is two words: family and name
if nft list table $TABLE >/dev/null 2>&1; then
	exit 0 # the agent's table is up, with its clients: never replace it
fi
if ! nft -f "$file"; then
	say "nft refused $file; the LAN stays open until the agent starts"
	exit 1
fi
say "LAN captive until the agent starts ($file)"
