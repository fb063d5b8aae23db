# shellcheck shell=bash disable=SC2034 # globals here are read by the scripts that source this file
# tuning/lib.sh — shared by check.sh, apply.sh, revert.sh and irq-affinity.sh; sourced, never run.
#
# Owns: where the scripts look (the overridable roots below), loading settings.conf, comparing a
# current value with a recommendation, reading sysctls and rlimits, writing a value with a plain
# explanation when the kernel or the container refuses, the state file that revert.sh replays, and
# rendering the sysctl.d drop-in from the table.
#
# Every path the scripts read or write comes from these variables, so tests (and the curious) can
# point them at a fake tree instead of the running kernel:
#   LIVESHARD_TUNING_PROC         /proc      (sys/, meminfo, self/limits, irq/, interrupts, */comm)
#   LIVESHARD_TUNING_SYSCTL_ROOT  $PROC/sys
#   LIVESHARD_TUNING_SYS          /sys       (class/net/IFACE, devices/system/cpu/online)
#   LIVESHARD_TUNING_ETC          /etc       (sysctl.d, security/limits.d, systemd/system)
#   LIVESHARD_TUNING_STATE        /var/lib/liveshard-tuning/previous.conf
#   LIVESHARD_TUNING_PAGESIZE     getconf PAGESIZE

TUNING_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TUNING_PROC=${LIVESHARD_TUNING_PROC:-/proc}
TUNING_SYSCTL_ROOT=${LIVESHARD_TUNING_SYSCTL_ROOT:-$TUNING_PROC/sys}
TUNING_SYS=${LIVESHARD_TUNING_SYS:-/sys}
TUNING_ETC=${LIVESHARD_TUNING_ETC:-/etc}
TUNING_STATE=${LIVESHARD_TUNING_STATE:-/var/lib/liveshard-tuning/previous.conf}
TUNING_SETTINGS=$TUNING_DIR/settings.conf
TUNING_LIMITS_FILE=$TUNING_PROC/self/limits
TUNING_MEMINFO=$TUNING_PROC/meminfo

# Installed locations of what --persist writes and of the unit check.sh inspects.
DROPIN_SYSCTL=$TUNING_ETC/sysctl.d/90-liveshard.conf
DROPIN_LIMITS=$TUNING_ETC/security/limits.d/90-liveshard.conf
UNIT_FILE=$TUNING_ETC/systemd/system/liveshard.service

say() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 2
}

# ---------------------------------------------------------------------------------------------
# The settings table

S_KIND=()
S_KEY=()
S_REC=()
S_RULE=()
S_WHY=()

trim() {
	local s=$1
	s=${s#"${s%%[![:space:]]*}"}
	s=${s%"${s##*[![:space:]]}"}
	printf '%s' "$s"
}

# Collapse runs of blanks (the kernel separates vector values with tabs) into single spaces.
squeeze() {
	local out="" w
	# shellcheck disable=SC2086 # word splitting is the point
	for w in $1; do out+="${out:+ }$w"; done
	printf '%s' "$out"
}

load_settings() {
	local line kind key rec rule why
	[[ -r $TUNING_SETTINGS ]] || die "cannot read $TUNING_SETTINGS"
	while IFS= read -r line || [[ -n $line ]]; do
		[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
		IFS='|' read -r kind key rec rule why <<<"$line"
		kind=$(trim "$kind")
		key=$(trim "$key")
		rec=$(squeeze "$rec")
		rule=$(squeeze "$rule")
		why=$(trim "$why")
		case $kind in
		sysctl | sysctl-advise | rlimit) ;;
		*) die "settings.conf: unknown kind '$kind' for '$key'" ;;
		esac
		if [[ $rec == auto ]]; then
			rec=$(auto_recommendation "$key")
		fi
		S_KIND+=("$kind")
		S_KEY+=("$key")
		S_REC+=("$rec")
		S_RULE+=("$rule")
		S_WHY+=("$why")
	done <"$TUNING_SETTINGS"
}

page_size() {
	if [[ -n ${LIVESHARD_TUNING_PAGESIZE:-} ]]; then
		printf '%s' "$LIVESHARD_TUNING_PAGESIZE"
	else
		getconf PAGESIZE 2>/dev/null || printf '4096'
	fi
}

# MemTotal in KiB, or nothing when meminfo cannot be read.
mem_total_kib() {
	[[ -r $TUNING_MEMINFO ]] || return 0
	awk '$1 == "MemTotal:" { print $2; exit }' "$TUNING_MEMINFO"
}

# Values that depend on the machine. Prints "unknown" when the input is missing; such a setting
# is reported n/a rather than guessed.
auto_recommendation() {
	local kib pages
	case $1 in
	net.ipv4.tcp_mem)
		# tcp_mem is in pages. The kernel's boot default is about RAM/16 for "pressure" and
		# 3/32 of RAM for "max" (net/ipv4/tcp.c, tcp_init_mem). For a million sockets under
		# load we allow RAM/16, RAM/8, RAM/4 (README: "Memory arithmetic").
		kib=$(mem_total_kib)
		if [[ -z $kib ]]; then
			printf 'unknown'
			return
		fi
		pages=$((kib * 1024 / $(page_size)))
		printf '%s %s %s' $((pages / 16)) $((pages / 8)) $((pages / 4))
		;;
	*) die "settings.conf: no automatic value is defined for $1" ;;
	esac
}

# ---------------------------------------------------------------------------------------------
# Comparing values. Numbers can exceed 2^63 (some kernels print ULONG_MAX), so they are compared
# as decimal strings; "unlimited"/"infinity" is larger than any number.

is_unlimited() { [[ $1 == unlimited || $1 == infinity || $1 == -1 ]]; }

# num_cmp A B prints -1, 0 or 1.
num_cmp() {
	local a=$1 b=$2
	if is_unlimited "$a" && is_unlimited "$b"; then
		printf '0'
		return
	fi
	if is_unlimited "$a"; then
		printf '1'
		return
	fi
	if is_unlimited "$b"; then
		printf -- '-1'
		return
	fi
	a=${a#"${a%%[!0]*}"}
	b=${b#"${b%%[!0]*}"}
	a=${a:-0}
	b=${b:-0}
	if ((${#a} != ${#b})); then
		((${#a} < ${#b})) && printf -- '-1' || printf '1'
	elif [[ $a == "$b" ]]; then
		printf '0'
	elif [[ $a < "$b" ]]; then
		printf -- '-1'
	else
		printf '1'
	fi
}

is_number() { [[ $1 =~ ^[0-9]+$ ]] || is_unlimited "$1"; }

# value_ok CURRENT RECOMMENDED RULE: success when every component satisfies its operator.
value_ok() {
	local -a cur rec ops
	local i c
	read -r -a cur <<<"$1"
	read -r -a rec <<<"$2"
	read -r -a ops <<<"$3"
	((${#cur[@]} == ${#rec[@]})) || return 1
	for i in "${!rec[@]}"; do
		if ! is_number "${cur[i]}" || ! is_number "${rec[i]}"; then
			[[ ${cur[i]} == "${rec[i]}" ]] || return 1
			continue
		fi
		c=$(num_cmp "${cur[i]}" "${rec[i]}")
		case ${ops[i]:-=} in
		'>=') ((c >= 0)) || return 1 ;;
		'<=') ((c <= 0)) || return 1 ;;
		'=') ((c == 0)) || return 1 ;;
		*) die "settings.conf: unknown rule '${ops[i]}'" ;;
		esac
	done
}

# merge_target CURRENT RECOMMENDED RULE: the value apply.sh writes. Each component moves only as
# far as its rule needs, so a host already beyond a recommendation keeps what it has.
merge_target() {
	local -a cur rec ops out
	local i c
	read -r -a cur <<<"$1"
	read -r -a rec <<<"$2"
	read -r -a ops <<<"$3"
	if ((${#cur[@]} != ${#rec[@]})); then
		printf '%s' "$2"
		return
	fi
	for i in "${!rec[@]}"; do
		out[i]=${rec[i]}
		if is_number "${cur[i]}" && is_number "${rec[i]}"; then
			c=$(num_cmp "${cur[i]}" "${rec[i]}")
			case ${ops[i]:-=} in
			'>=') ((c > 0)) && out[i]=${cur[i]} ;;
			'<=') ((c < 0)) && out[i]=${cur[i]} ;;
			esac
		fi
	done
	printf '%s' "${out[*]}"
}

# ---------------------------------------------------------------------------------------------
# Reading the current state

sysctl_path() { printf '%s/%s' "$TUNING_SYSCTL_ROOT" "${1//./\/}"; }

# sysctl_read KEY: prints the value (blanks squeezed); fails when the sysctl does not exist here.
sysctl_read() {
	local f raw
	f=$(sysctl_path "$1")
	[[ -f $f ]] || return 1
	raw=$(cat "$f" 2>/dev/null) || return 1
	squeeze "$raw"
}

# rlimit_shell KEY: soft/hard limits of this process tree from /proc/self/limits. memlock is in
# bytes there; we keep bytes internally and format for display.
rlimit_shell() {
	local name field
	case $1 in
	nofile.soft) name='Max open files' field=4 ;;
	nofile.hard) name='Max open files' field=5 ;;
	memlock) name='Max locked memory' field=4 ;;
	*) return 1 ;;
	esac
	[[ -r $TUNING_LIMITS_FILE ]] || return 1
	# "Max open files  20000  20000  files": both names are three words, so soft is $4, hard $5.
	awk -v name="$name" -v field="$field" 'index($0, name) == 1 { print $field; exit }' \
		"$TUNING_LIMITS_FILE"
}

# systemd sizes: plain bytes or K/M/G/T suffixes (base 1024); "infinity" is unlimited.
systemd_bytes() {
	local v=$1 n unit
	if is_unlimited "$v"; then
		printf 'unlimited'
		return
	fi
	n=${v%%[KMGTkmgt]*}
	unit=${v#"$n"}
	case $unit in
	'') printf '%s' "$n" ;;
	[Kk]) printf '%s' $((n * 1024)) ;;
	[Mm]) printf '%s' $((n * 1024 * 1024)) ;;
	[Gg]) printf '%s' $((n * 1024 * 1024 * 1024)) ;;
	[Tt]) printf '%s' $((n * 1024 * 1024 * 1024 * 1024)) ;;
	*) printf '%s' "$v" ;;
	esac
}

# rlimit_unit KEY: what the installed unit (and its drop-ins, later ones winning) sets, or
# "not set". Fails when no unit is installed.
rlimit_unit() {
	local f line files=() nofile="" memlock="" value=""
	[[ -f $UNIT_FILE ]] || return 1
	files=("$UNIT_FILE")
	for f in "$UNIT_FILE.d"/*.conf; do
		[[ -f $f ]] && files+=("$f")
	done
	for f in "${files[@]}"; do
		while IFS= read -r line || [[ -n $line ]]; do
			line=$(trim "$line")
			case $line in
			LimitNOFILE=*) nofile=${line#LimitNOFILE=} ;;
			LimitMEMLOCK=*) memlock=${line#LimitMEMLOCK=} ;;
			esac
		done <"$f"
	done
	# LimitNOFILE=N sets both; LimitNOFILE=SOFT:HARD sets them apart.
	case $1 in
	nofile.soft) value=${nofile%%:*} ;;
	nofile.hard) value=${nofile##*:} ;;
	memlock) value=${memlock%%:*} ;;
	esac
	if [[ -n $value ]]; then
		systemd_bytes "$value"
	else
		printf 'not set'
	fi
}

# rlimit_limitsd KEY: what the installed limits.d file grants (memlock there is in KiB; "-"
# sets soft and hard together). Fails when the file is not installed.
rlimit_limitsd() {
	local want_type want_item
	[[ -f $DROPIN_LIMITS ]] || return 1
	case $1 in
	nofile.soft) want_type=soft want_item=nofile ;;
	nofile.hard) want_type=hard want_item=nofile ;;
	memlock) want_type=soft want_item=memlock ;;
	esac
	awk -v t="$want_type" -v item="$want_item" '
		/^[[:space:]]*#/ || NF < 4 { next }
		$3 == item && ($2 == t || $2 == "-") { v = $4 }
		END {
			if (v == "") { print "not set"; exit }
			if (v == "unlimited" || v == "infinity" || v == "-1") { print "unlimited"; exit }
			if (item == "memlock") { printf "%.0f\n", v * 1024 } else { print v }
		}
	' "$DROPIN_LIMITS"
}

# Display form of an rlimit value: memlock in KiB/MiB like `ulimit -l`, the rest as is.
rlimit_display() {
	local key=$1 v=$2
	if [[ $key != memlock ]] || ! [[ $v =~ ^[0-9]+$ ]]; then
		printf '%s' "$v"
	elif ((v % 1048576 == 0)); then
		printf '%s MiB' $((v / 1048576))
	else
		printf '%s KiB' $((v / 1024))
	fi
}

# ---------------------------------------------------------------------------------------------
# Writing, with a plain reason when it fails

# A shell word that can be pasted back into a shell.
shell_quote() {
	if [[ $1 =~ ^[A-Za-z0-9_./:,=+@%-]+$ ]]; then
		printf '%s' "$1"
	else
		printf "'%s'" "${1//\'/\'\\\'\'}"
	fi
}

# Which tree a path belongs to, for messages: "/proc/sys", "/sys", ...
tree_of() {
	case $1 in
	"$TUNING_SYSCTL_ROOT"/*) printf '%s' "$TUNING_SYSCTL_ROOT" ;;
	"$TUNING_PROC"/*) printf '%s' "$TUNING_PROC" ;;
	"$TUNING_SYS"/*) printf '%s' "$TUNING_SYS" ;;
	*) dirname "$1" ;;
	esac
}

# explain_write_error PATH RAW_ERROR: one short reason a person can act on.
explain_write_error() {
	local path=$1 err=$2 tree
	tree=$(tree_of "$path")
	case $err in
	*"Read-only file system"*)
		printf 'read-only %s: running inside a container? Set it on the host instead' "$tree"
		;;
	*"Permission denied"*)
		if ((EUID != 0)); then
			printf 'permission denied (not root?)'
		elif [[ ! -w $tree ]]; then
			printf 'read-only %s: running inside a container? Set it on the host instead' "$tree"
		else
			printf 'permission denied even as root (a security module, or a container without the capability?)'
		fi
		;;
	*"Operation not permitted"*)
		printf 'operation not permitted (EPERM): needs CAP_SYS_ADMIN/CAP_NET_ADMIN; in a container this belongs to the host'
		;;
	*"Invalid argument"*) printf 'the kernel rejected the value (EINVAL)' ;;
	*"Input/output error"*) printf 'the kernel refused (EIO): the driver manages this affinity itself' ;;
	*"No such file or directory"*) printf 'not present here' ;;
	*)
		err=${err##*: }
		printf '%s' "${err:-unknown error}"
		;;
	esac
}

WRITE_ERR=""
STATE_ERR=""

# write_value PATH VALUE: writes one value; on failure sets WRITE_ERR to the reason.
write_value() {
	local path=$1 value=$2 err
	WRITE_ERR=""
STATE_ERR=""
	if [[ ! -e $path ]]; then
		WRITE_ERR="not present here"
		return 1
	fi
	if err=$({ printf '%s\n' "$value" >"$path"; } 2>&1); then
		return 0
	fi
	WRITE_ERR=$(explain_write_error "$path" "$err")
	return 1
}

# The command a person would type to do the same thing by hand.
write_command() { printf 'echo %s > %s' "$(shell_quote "$2")" "$(shell_quote "$1")"; }

# ---------------------------------------------------------------------------------------------
# The state file: what each setting was before these scripts first touched it.
#
# One record a line, tab-separated: KIND <tab> TARGET <tab> VALUE
#   sysctl  net.core.somaxconn                          4096
#   path    /proc/irq/45/smp_affinity_list              0-15
#   file    /etc/sysctl.d/90-liveshard.conf             absent | backup:/var/lib/.../backup/NAME
# A target already recorded keeps its first value, so running apply.sh twice still reverts to
# the values from before the first run.

ST_KIND=()
ST_TARGET=()
ST_VALUE=()
ST_NEW=0

state_load() {
	local kind target value
	ST_KIND=()
	ST_TARGET=()
	ST_VALUE=()
	ST_NEW=0
	[[ -r $TUNING_STATE ]] || return 0
	while IFS=$'\t' read -r kind target value || [[ -n $kind ]]; do
		[[ -z $kind || $kind == \#* ]] && continue
		ST_KIND+=("$kind")
		ST_TARGET+=("$target")
		ST_VALUE+=("$value")
	done <"$TUNING_STATE"
}

state_has() {
	local i
	for i in "${!ST_TARGET[@]}"; do
		[[ ${ST_KIND[i]} == "$1" && ${ST_TARGET[i]} == "$2" ]] && return 0
	done
	return 1
}

state_add() {
	state_has "$1" "$2" && return 0
	ST_KIND+=("$1")
	ST_TARGET+=("$2")
	ST_VALUE+=("$3")
	ST_NEW=$((ST_NEW + 1))
}

# state_forget KIND TARGET: drop a record added by this run whose change then failed, so that
# revert.sh does not "restore" something that was never changed.
state_forget() {
	local i
	for i in "${!ST_TARGET[@]}"; do
		if [[ ${ST_KIND[i]} == "$1" && ${ST_TARGET[i]} == "$2" ]]; then
			unset 'ST_KIND[i]' 'ST_TARGET[i]' 'ST_VALUE[i]'
		fi
	done
	ST_KIND=("${ST_KIND[@]}")
	ST_TARGET=("${ST_TARGET[@]}")
	ST_VALUE=("${ST_VALUE[@]}")
}

# state_resave: after forgetting records, rewrite the file, or remove it once nothing is left.
state_resave() {
	if ((${#ST_KIND[@]} == 0)); then
		rm -f "$TUNING_STATE"
	else
		state_save
	fi
}

state_backup_dir() { printf '%s' "${TUNING_STATE%.conf}.backup"; }

# state_save: write atomically next to the final name. Fails with a plain message.
state_save() {
	local dir tmp i err
	dir=$(dirname "$TUNING_STATE")
	if ! err=$(mkdir -p "$dir" 2>&1); then
		STATE_ERR=$(explain_write_error "$dir" "$err")
		return 1
	fi
	tmp="$TUNING_STATE.tmp.$$"
	if ! err=$({
		{
			printf '# liveshard tuning: values from before tuning/ first changed them.\n'
			printf '# tuning/revert.sh restores these, then removes this file.\n'
			for i in "${!ST_KIND[@]}"; do
				printf '%s\t%s\t%s\n' "${ST_KIND[i]}" "${ST_TARGET[i]}" "${ST_VALUE[i]}"
			done
		} >"$tmp" && mv -f "$tmp" "$TUNING_STATE"
	} 2>&1); then
		rm -f "$tmp" 2>/dev/null || true
		STATE_ERR=$(explain_write_error "$TUNING_STATE" "$err")
		return 1
	fi
}

# Record a file before it is replaced: "absent", or a copy kept under the backup directory.
state_add_file() {
	local path=$1 backup
	state_has file "$path" && return 0
	if [[ -e $path ]]; then
		backup="$(state_backup_dir)/$(printf '%s' "$path" | tr '/' '_')"
		if ! mkdir -p "$(state_backup_dir)" || ! cp -p "$path" "$backup"; then
			return 1
		fi
		state_add file "$path" "backup:$backup"
	else
		state_add file "$path" absent
	fi
}

# ---------------------------------------------------------------------------------------------
# The sysctl.d drop-in, rendered from the table.
#
#   reference  the recommended values; committed as tuning/sysctl.d/90-liveshard.conf
#   host       what apply.sh --persist installs here: tcp_mem sized from this machine's RAM, and
#              a value this host already has beyond a recommendation kept rather than lowered.

render_sysctl_dropin() {
	local mode=$1 i key rec rule cur value prefix
	printf '# liveshard: kernel settings for about a million TCP connections per machine.\n'
	if [[ $mode == reference ]]; then
		cat <<'EOF'
# Rendered from tuning/settings.conf by `tuning/apply.sh --print-dropin=reference`; a test keeps
# this file identical. tuning/README.md explains each setting.
# `tuning/apply.sh --persist` installs a copy rendered for the host as
# /etc/sysctl.d/90-liveshard.conf: tcp_mem sized from its RAM, and values the host already has
# beyond a recommendation kept rather than lowered. `tuning/revert.sh` removes it.
EOF
	else
		cat <<'EOF'
# Rendered for this host from tuning/settings.conf by `tuning/apply.sh --persist`;
# tuning/README.md explains each setting. `tuning/revert.sh` removes this file.
EOF
	fi
	for i in "${!S_KEY[@]}"; do
		key=${S_KEY[i]}
		rec=${S_REC[i]}
		rule=${S_RULE[i]}
		# Process limits live in limits.d/90-liveshard.conf and liveshard.service.
		[[ ${S_KIND[i]} == rlimit ]] && continue
		printf '\n# %s\n' "${S_WHY[i]}"
		# conntrack sysctls exist only once the module is loaded, which may be after
		# systemd-sysctl runs; "-" tells it not to fail the boot over that.
		prefix=""
		[[ $key == net.netfilter.* ]] && prefix="-"
		if [[ ${S_KIND[i]} == sysctl-advise ]]; then
			printf '# checked, not set here (a policy choice): %s = %s\n' "$key" "$rec"
			continue
		fi
		if [[ $mode == reference && $key == net.ipv4.tcp_mem ]]; then
			printf '# sized from RAM at install time: RAM/16 RAM/8 RAM/4 in pages;\n'
			printf '# e.g. 64 GiB with 4 KiB pages: %s = 1048576 2097152 4194304\n' "$key"
			continue
		fi
		value=$rec
		if [[ $mode == host ]] && cur=$(sysctl_read "$key"); then
			value=$(merge_target "$cur" "$rec" "$rule")
			if [[ $value != "$rec" ]]; then
				printf '# this host already has %s (recommended: %s %s)\n' "$value" "$rule" "$rec"
			fi
		fi
		[[ $value == unknown ]] && continue
		printf '%s%s = %s\n' "$prefix" "$key" "$value"
	done
}
