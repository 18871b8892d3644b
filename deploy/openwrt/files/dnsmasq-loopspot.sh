#!/bin/sh
# Publish the Loopspot portal to phones through dnsmasq, by editing /etc/config/dhcp:
#  - DHCP option 114 (RFC 8910) on the DHCP pools of the agent's LAN interfaces, carrying
#    the RFC 8908 API URL. Phones trust it only over HTTPS on a name with a certificate:
#    while the agent serves one (agent/portal/tls.py), it keeps the portal's name in
#    <flash_dir>/portal.name and runs this, and the URL is
#    https://<portal name>:<portal_https_port>/api/captive on every LAN, with one
#    `config domain` section per LAN portal address that makes dnsmasq answer that name.
#    Until then it is http://<the pool's LAN portal address>:<portal_port>/api/captive.
#    Several LANs (`list lan 'IFACE=ADDRESS'`): the agent serves the HTTPS API on each
#    LAN's address with the one certificate, and dnsmasq's localise-queries (OpenWrt's
#    default, `option localise_queries '1'`) answers the name with the address on the
#    asking phone's subnet only;
#  - a `config ipset` section that makes dnsmasq add the IPv4 addresses of walled-garden
#    domains to the agent's set:  nftset=/<domain>/.../4#inet#loopspot#walled_garden
#    The domains are those of /etc/config/loopspot, or, once the cloud has pushed a list,
#    the cloud's: the agent keeps it in <flash_dir>/walled-garden.domains and runs this.
#
# It converges: a second run changes nothing. dnsmasq is reloaded only when
# /etc/config/dhcp changed and dnsmasq is running. Installed as
# /usr/libexec/loopspot/dnsmasq-sync; the init script and the first-boot script run it.
#
# Usage: dnsmasq-sync            apply /etc/config/loopspot
#        dnsmasq-sync --remove   take option 114 and the walled-garden section out again
# Exit:  0 done (changed or not), 1 failed, 2 /etc/config/loopspot is invalid (nothing changed)
#
# Loopspot owns option 114: any `114,...` entry in a DHCP pool is replaced or removed.

# The agent's defaults (agent/settings.py); tests/deploy keeps them in step.
DEFAULT_LAN_INTERFACE=br-lan
DEFAULT_PORTAL_ADDRESS=192.168.1.1
DEFAULT_PORTAL_PORT=2050
DEFAULT_PORTAL_HTTPS_PORT=8443
DEFAULT_FLASH_DIR=/etc/loopspot
CLOUD_DOMAINS_FILE=walled-garden.domains # agent/link/local.py writes it
PORTAL_NAME_FILE=portal.name # agent/portal/tls.py writes it while it serves the certificate
PORTAL_DOMAIN_SECTION=loopspot_portal
API_PATH=/api/captive
NFT_FAMILY=inet
NFT_TABLE=loopspot
NFT_SET=walled_garden
IPSET_SECTION=loopspot_walled_garden

LOOPSPOT_CONFIG=${LOOPSPOT_CONFIG:-/etc/config/loopspot}
DNSMASQ_INIT=${DNSMASQ_INIT:-/etc/init.d/dnsmasq}

set -f # values from UCI are never file patterns

say() {
	echo "dnsmasq-sync: $*" >&2
	command -v logger >/dev/null 2>&1 && logger -t loopspot "dnsmasq-sync: $*"
	return 0
}

# Our own uci change directory: other sessions' pending edits (LuCI) are neither
# committed nor reverted by us.
SAVEDIR=$(mktemp -d "${TMPDIR:-/tmp}/loopspot-uci.XXXXXX") || exit 1
trap 'rm -rf "$SAVEDIR"' EXIT
u() {
	uci -q -t "$SAVEDIR" "$@"
}

is_ipv4() {
	local IFS=. part count=0
	case "$1" in
		*[!0-9.]* | .* | *. | *..*) return 1 ;;
	esac
	for part in $1; do
		count=$((count + 1))
		case "$part" in
			?????* | 0?*) return 1 ;; # too long, or a leading zero
		esac
		[ "$part" -le 255 ] || return 1
	done
	[ "$count" -eq 4 ]
}

is_port() {
	case "$1" in
		'' | *[!0-9]* | 0*) return 1 ;;
	esac
	[ "${#1}" -le 5 ] && [ "$1" -le 65535 ]
}

# A domain dnsmasq can take between slashes; lower case, no trailing dot.
clean_domain() {
	local name
	# shellcheck disable=SC2018,SC2019 # domain names are ASCII: A-Z exactly, in any locale
	name=$(printf '%s' "$1" | tr 'A-Z' 'a-z')
	name=${name%.}
	case "$name" in
		'' | *[!a-z0-9.-]* | .* | *..* | -* | *.-* | *-.* | *-) return 1 ;;
		*.*) ;;
		*) return 1 ;; # a whole top-level domain
	esac
	printf '%s\n' "$name"
}

# The walled-garden domains as written: the cloud's list when it pushed one, else those of
# every `config walled_garden` section.
listed_domains() {
	local i=0
	if [ -f "$flash_dir/$CLOUD_DOMAINS_FILE" ]; then
		cat "$flash_dir/$CLOUD_DOMAINS_FILE"
		return
	fi
	while [ "$(u get "loopspot.@walled_garden[$i]")" = walled_garden ]; do
		u get "loopspot.@walled_garden[$i].domain"
		i=$((i + 1))
	done
}

# The portal's name, cleaned, while the agent serves the HTTPS API with its certificate.
portal_name() {
	local name
	[ -f "$flash_dir/$PORTAL_NAME_FILE" ] || return 1
	read -r name <"$flash_dir/$PORTAL_NAME_FILE" || [ -n "$name" ] || return 1
	clean_domain "$name"
}

# Every walled-garden domain, cleaned, once, in order.
walled_garden_domains() {
	local domain clean seen=" "
	for domain in $(listed_domains); do
		if clean=$(clean_domain "$domain"); then
			case "$seen" in
				*" $clean "*) ;;
				*)
					seen="$seen$clean "
					echo "$clean"
					;;
			esac
		else
			say "skipping walled-garden domain '$domain': not a domain name"
		fi
	done
}

# The agent's LAN interface (of $2, space separated) that DHCP section $1 is a pool on.
pool_lan() {
	local section="$1" lans="$2" iface ignore names lan name
	iface=$(u get "dhcp.$section.interface") || return 1
	ignore=$(u get "dhcp.$section.ignore")
	[ "$ignore" = 1 ] && return 1
	# The agent names Linux devices (br-lan); dhcp names netifd interfaces (lan).
	names="$iface $(u get "network.$iface.device") $(u get "network.$iface.ifname")"
	[ "$(u get "network.$iface.type")" = bridge ] && names="$names br-$iface"
	for lan in $lans; do
		for name in $names; do
			[ "$lan" = "$name" ] && echo "$lan" && return 0
		done
	done
	return 1
}

# The portal address of LAN interface $1: its own `list lan 'IFACE=ADDRESS'`, else
# agent.portal_address (as agent/access.py's lan_portals).
lan_address() {
	local entry
	for entry in $own_lans; do
		[ "${entry%%=*}" = "$1" ] && echo "${entry#*=}" && return 0
	done
	echo "$address"
}

# Remove every option-114 entry of section $1 from its `list $2`.
drop_option_114() {
	local section="$1" list="$2" value
	for value in $(u get "dhcp.$section.$list"); do
		case "$value" in
			114,*) u del_list "dhcp.$section.$list=$value" ;;
		esac
	done
}

state() {
	u show dhcp | sort
}

remove=
case "$1" in
	--remove) remove=1 ;;
	'') ;;
	*)
		echo "usage: $0 [--remove]" >&2
		exit 1
		;;
esac

if [ -z "$remove" ] && command -v loopspot-agent >/dev/null 2>&1; then
	if ! loopspot-agent config-check "$LOOPSPOT_CONFIG" >/dev/null; then
		say "$LOOPSPOT_CONFIG is invalid; dnsmasq settings left as they were"
		exit 2
	fi
fi

# As agent/config.py folds them: `list lan` interfaces are LAN interfaces too, and alone they
# replace the default one; the first one's address is then the default portal address.
own_lans=$(u get loopspot.agent.lan) || own_lans=
lans=$(u get loopspot.agent.lan_interface) || lans=
address=$(u get loopspot.agent.portal_address) || address=
for entry in $own_lans; do
	lans="$lans ${entry%%=*}"
	[ -n "$address" ] || address=${entry#*=}
done
[ -n "$lans" ] || lans=$DEFAULT_LAN_INTERFACE
[ -n "$address" ] || address=$DEFAULT_PORTAL_ADDRESS
port=$(u get loopspot.agent.portal_port) || port=$DEFAULT_PORTAL_PORT
https_port=$(u get loopspot.agent.portal_https_port) || https_port=$DEFAULT_PORTAL_HTTPS_PORT
flash_dir=$(u get loopspot.agent.flash_dir) || flash_dir=$DEFAULT_FLASH_DIR
if [ -z "$remove" ]; then
	is_ipv4 "$address" || {
		say "agent.portal_address '$address' is not an IPv4 address; nothing changed"
		exit 2
	}
	for entry in $own_lans; do
		case "$entry" in
			?*=*) is_ipv4 "${entry#*=}" && continue ;;
		esac
		say "agent.lan '$entry' is not INTERFACE=IPV4ADDRESS; nothing changed"
		exit 2
	done
	is_port "$port" || {
		say "agent.portal_port '$port' is not a port number; nothing changed"
		exit 2
	}
	is_port "$https_port" || {
		say "agent.portal_https_port '$https_port' is not a port number; nothing changed"
		exit 2
	}
fi
name=
[ -n "$remove" ] || name=$(portal_name) || name=
https_url=
if [ -n "$name" ]; then
	case "$https_port" in
		443) https_url="https://$name$API_PATH" ;;
		*) https_url="https://$name:$https_port$API_PATH" ;;
	esac
fi

# The API URL for the phones of LAN interface $1: the https name, else its own address.
api_url() {
	if [ -n "$https_url" ]; then
		echo "$https_url"
	else
		echo "http://$(lan_address "$1"):$port$API_PATH"
	fi
}

u show dhcp >/dev/null || {
	say "cannot read /etc/config/dhcp"
	exit 1
}
before=$(state)

served=
urls=
for section in $(u show dhcp | sed -n 's/^dhcp\.\([^.=]*\)=dhcp$/\1/p'); do
	drop_option_114 "$section" dhcp_option
	drop_option_114 "$section" dhcp_option_force
	if [ -z "$remove" ] && lan=$(pool_lan "$section" "$lans"); then
		# Forced: sent even to a client that did not ask for it in its request list.
		url=$(api_url "$lan")
		u add_list "dhcp.$section.dhcp_option_force=114,$url"
		served="$served $section"
		urls="$urls $section=$url"
	fi
done

# The LANs' DNS answers the portal's name (the certificate's) with each LAN's portal
# address: loopspot_portal for the first, loopspot_portal_2... for the next ones.
for section in $(u show dhcp | sed -n "s/^dhcp\.\(${PORTAL_DOMAIN_SECTION}[_0-9]*\)=domain\$/\1/p"); do
	u delete "dhcp.$section"
done
if [ -n "$name" ]; then
	count=0 seen=" "
	for lan in $lans; do
		ip=$(lan_address "$lan")
		case "$seen" in
			*" $ip "*) continue ;;
		esac
		seen="$seen$ip "
		count=$((count + 1))
		section=$PORTAL_DOMAIN_SECTION
		[ "$count" -eq 1 ] || section="${PORTAL_DOMAIN_SECTION}_$count"
		u set "dhcp.$section=domain"
		u set "dhcp.$section.name=$name"
		u set "dhcp.$section.ip=$ip"
	done
	if [ "$count" -gt 1 ] && [ "$(u get dhcp.@dnsmasq[0].localise_queries)" = 0 ]; then
		say "dhcp localise_queries is off: phones may get another LAN's address for $name; uci set dhcp.@dnsmasq[0].localise_queries=1"
	fi
fi

u delete "dhcp.$IPSET_SECTION"
domains=
[ -n "$remove" ] || domains=$(walled_garden_domains)
if [ -n "$domains" ]; then
	u set "dhcp.$IPSET_SECTION=ipset"
	u add_list "dhcp.$IPSET_SECTION.name=$NFT_SET"
	u set "dhcp.$IPSET_SECTION.table=$NFT_TABLE"
	u set "dhcp.$IPSET_SECTION.table_family=$NFT_FAMILY"
	u set "dhcp.$IPSET_SECTION.family=4"
	for domain in $domains; do
		u add_list "dhcp.$IPSET_SECTION.domain=$domain"
	done
	if command -v dnsmasq >/dev/null 2>&1 && ! dnsmasq --version 2>/dev/null | grep -q nftset; then
		say "this dnsmasq has no nftset support: walled-garden domains stay closed until dnsmasq-full replaces it"
	fi
fi

if [ -z "$remove" ] && [ -z "$served" ]; then
	say "no DHCP pool serves '$lans': phones will not get option 114 (the portal still works by redirect)"
fi

if [ "$(state)" = "$before" ]; then
	exit 0
fi
u commit dhcp || {
	say "uci commit dhcp failed"
	exit 1
}
if [ -n "$remove" ]; then
	say "removed option 114, the portal's name and the walled-garden set from /etc/config/dhcp"
else
	say "option 114:${urls:- no pool}; $(echo "$domains" | grep -c .) walled-garden domain(s)"
fi
if [ -x "$DNSMASQ_INIT" ] && pidof dnsmasq >/dev/null 2>&1; then
	"$DNSMASQ_INIT" reload
fi
exit 0
