#!/usr/bin/env bash
# tuning/irq-affinity.sh — spread one NIC's queue interrupts over the online CPUs and set RPS/XPS.
#
# Owns: /proc/irq/N/smp_affinity_list for the NIC's interrupts (round robin over online CPUs),
# RPS (queues/rx-*/rps_cpus, rps_flow_cnt and net.core.rps_sock_flow_entries) when the NIC has
# fewer receive queues than CPUs, and XPS (queues/tx-*/xps_cpus) so each CPU transmits on "its"
# queue. Previous values go to the same state file as apply.sh's; tuning/revert.sh restores them.
# Background: Documentation/networking/scaling.rst and Documentation/core-api/irq/irq-affinity.rst.
#
# Exit status: 0 done (or nothing to do), 1 something could not be set or irqbalance is running
# (without --force), 2 usage error or no such interface.

set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Kernel docs (scaling.rst) suggest 32768 flow entries for a moderately loaded server; each rx
# queue gets an equal share.
RPS_SOCK_FLOW_ENTRIES=32768

usage() {
	cat <<'EOF'
usage: tuning/irq-affinity.sh [--dry-run] [--force] [--state FILE] IFACE

Pins IFACE's queue interrupts round robin to the online CPUs, enables RPS/RFS when the NIC has
fewer receive queues than CPUs, and maps each CPU to a transmit queue (XPS).

  --dry-run      print the commands; change nothing (works without root)
  --force        go ahead even though irqbalance is running
  --state FILE   where previous values are saved for tuning/revert.sh

When not to use it:
  - irqbalance is running: it rewrites these masks every 10 s. Stop it first
    (systemctl disable --now irqbalance) or ban the NIC's IRQs in its config; otherwise
    leave interrupt placement to irqbalance and skip this script.
  - the driver manages its IRQ affinity itself (many modern NICs do): writes fail with EIO,
    which is reported per IRQ and is harmless.
  - a VM with one or two queues: there is little to spread; RPS alone may help.
  - cores are reserved (isolcpus, a co-located loadgen): spreading over every online CPU
    would put interrupts on them.
EOF
}

dry_run=0
force=0
iface=""
while (($#)); do
	case $1 in
	--dry-run | -n) dry_run=1 ;;
	--force) force=1 ;;
	--state)
		(($# >= 2)) || die "--state needs a file name"
		TUNING_STATE=$2
		shift
		;;
	--state=*) TUNING_STATE=${1#--state=} ;;
	-h | --help)
		usage
		exit 0
		;;
	-*)
		usage >&2
		exit 2
		;;
	*)
		[[ -z $iface ]] || die "one interface at a time"
		iface=$1
		;;
	esac
	shift
done
[[ -n $iface ]] || {
	usage >&2
	exit 2
}

netdir=$TUNING_SYS/class/net/$iface
[[ -d $netdir ]] || die "no network interface '$iface' here (see: ls $TUNING_SYS/class/net)"

# --- Online CPUs: "0-3,8-11" -> 0 1 2 3 8 9 10 11 -----------------------------------------------

cpus=()
online=$(cat "$TUNING_SYS/devices/system/cpu/online" 2>/dev/null) || die "cannot read $TUNING_SYS/devices/system/cpu/online"
IFS=',' read -r -a ranges <<<"$online"
for r in "${ranges[@]}"; do
	r=$(trim "$r")
	[[ -z $r ]] && continue
	if [[ $r == *-* ]]; then
		for ((c = ${r%-*}; c <= ${r#*-}; c++)); do cpus+=("$c"); done
	else
		cpus+=("$r")
	fi
done
ncpu=${#cpus[@]}
((ncpu > 0)) || die "no online CPUs listed in $TUNING_SYS/devices/system/cpu/online"

# cpu_mask CPU...: the hex mask format of rps_cpus/xps_cpus (32-bit words, comma separated).
cpu_mask() {
	local -a words=()
	local c w hex="" max=0
	for c in "$@"; do ((c > max)) && max=$c; done
	for ((w = 0; w <= max / 32; w++)); do words[w]=0; done
	for c in "$@"; do words[c / 32]=$((words[c / 32] | (1 << (c % 32)))); done
	for ((w = max / 32; w >= 0; w--)); do hex+="${hex:+,}$(printf '%08x' "${words[w]}")"; done
	printf '%s' "$hex"
}

# Masks compare equal regardless of commas and leading zeros.
mask_norm() {
	local m=${1//,/}
	m=${m,,}
	m=${m#"${m%%[!0]*}"}
	printf '%s' "${m:-0}"
}

# --- The NIC's interrupts ----------------------------------------------------------------------

if [[ ! -e $netdir/device ]]; then
	say "$iface is a virtual device (lo, veth, bridge, tunnel): it has no hardware queues to spread."
	exit 0
fi
device=$(cd "$netdir/device" && pwd -P)

# The NIC's MSI/MSI-X vectors: on the device itself (PCI NICs) or on its parent (virtio-net, where
# the net device hangs off a virtioN device under the PCI function).
irqs=()
for d in "$device/msi_irqs" "$(dirname "$device")/msi_irqs"; do
	[[ -d $d ]] || continue
	for f in "$d"/*; do
		[[ -e $f ]] && irqs+=("${f##*/}")
	done
	break
done
if ((${#irqs[@]} == 0)) && [[ -r $TUNING_PROC/interrupts ]]; then
	# No MSI list: match the interface or device name in the interrupt's name.
	while read -r irq; do irqs+=("$irq"); done < <(
		awk -v ifc="$iface" -v dev="${device##*/}" '
			$1 ~ /^[0-9]+:$/ && (index($NF, ifc) || index($NF, dev)) { sub(":", "", $1); print $1 }
		' "$TUNING_PROC/interrupts"
	)
fi
mapfile -t irqs < <(printf '%s\n' "${irqs[@]}" | sed '/^$/d' | sort -n)

irq_name() {
	[[ -r $TUNING_PROC/interrupts ]] || return 0
	awk -v n="$1:" '$1 == n { print $NF; exit }' "$TUNING_PROC/interrupts"
}

# --- irqbalance --------------------------------------------------------------------------------

irqbalance=0
for f in "$TUNING_PROC"/[0-9]*/comm; do
	[[ -r $f ]] || continue
	if [[ $(cat "$f" 2>/dev/null || true) == irqbalance ]]; then
		irqbalance=1
		break
	fi
done
if ((irqbalance)); then
	warn "irqbalance is running: it will move these interrupts again within seconds."
	warn "Stop it (systemctl disable --now irqbalance) or ban $iface's IRQs in its config,"
	warn "or leave interrupt placement to it and do not use this script."
	if ((!dry_run && !force)); then
		warn "Nothing was changed. Use --force to apply anyway."
		exit 1
	fi
fi

# --- Plan ----------------------------------------------------------------------------------------

W_PATH=() # file to write
W_FROM=() # its current value
W_TO=()   # new value
W_NOTE=() # what it is

plan() {
	local path=$1 to=$2 note=$3 from
	# A value we cannot read back is a value revert.sh could not restore: leave it alone.
	if ! from=$(cat "$path" 2>/dev/null); then
		say "skip $note: cannot read $path"
		return 0
	fi
	from=$(squeeze "$from")
	W_PATH+=("$path")
	W_FROM+=("$from")
	W_TO+=("$to")
	W_NOTE+=("$note")
}

say "$iface: ${#irqs[@]} interrupts, $ncpu online CPUs ($online)"
if ((${#irqs[@]} == 0)); then
	say "No queue interrupts found for $iface (a virtual device such as lo, veth or a bridge has none)."
fi
for k in "${!irqs[@]}"; do
	irq=${irqs[k]}
	cpu=${cpus[k % ncpu]}
	path=$TUNING_PROC/irq/$irq/smp_affinity_list
	if [[ ! -e $path ]]; then
		say "skip IRQ $irq: $path not present here"
		continue
	fi
	cur=$(squeeze "$(cat "$path" 2>/dev/null || true)")
	[[ $cur == "$cpu" ]] && continue
	name=$(irq_name "$irq")
	plan "$path" "$cpu" "IRQ $irq${name:+ ($name)} -> CPU $cpu"
done

rxq=()
txq=()
for d in "$netdir"/queues/rx-*; do [[ -d $d ]] && rxq+=("$d"); done
for d in "$netdir"/queues/tx-*; do [[ -d $d ]] && txq+=("$d"); done
nrx=${#rxq[@]}
ntx=${#txq[@]}

if ((nrx == 0)); then
	say "RPS: $iface has no receive queues listed; skipped."
elif ((nrx >= ncpu)); then
	say "RPS: not needed, $iface has $nrx receive queues for $ncpu CPUs (the hardware already spreads)."
else
	all=$(cpu_mask "${cpus[@]}")
	say "RPS/RFS: $nrx receive queues for $ncpu CPUs; steering received packets over all CPUs."
	flow_key=net.core.rps_sock_flow_entries
	if cur=$(sysctl_read "$flow_key"); then
		if (($(num_cmp "$cur" "$RPS_SOCK_FLOW_ENTRIES") < 0)); then
			plan "$(sysctl_path "$flow_key")" "$RPS_SOCK_FLOW_ENTRIES" "$flow_key"
		fi
	else
		say "skip $flow_key: not present here"
	fi
	for q in "${rxq[@]}"; do
		if [[ -e $q/rps_cpus ]] && [[ $(mask_norm "$(cat "$q/rps_cpus" 2>/dev/null || true)") != "$(mask_norm "$all")" ]]; then
			plan "$q/rps_cpus" "$all" "RPS ${q##*/}"
		fi
		if [[ -e $q/rps_flow_cnt ]] && [[ $(cat "$q/rps_flow_cnt" 2>/dev/null || true) != $((RPS_SOCK_FLOW_ENTRIES / nrx)) ]]; then
			plan "$q/rps_flow_cnt" $((RPS_SOCK_FLOW_ENTRIES / nrx)) "RFS ${q##*/}"
		fi
	done
fi

if ((ntx < 2)); then
	say "XPS: not needed, $iface has $ntx transmit queue(s)."
else
	say "XPS: CPU i transmits on queue i mod $ntx."
	for t in "${!txq[@]}"; do
		q=${txq[t]}
		[[ -e $q/xps_cpus ]] || continue
		mine=()
		for k in "${!cpus[@]}"; do
			((k % ntx == t)) && mine+=("${cpus[k]}")
		done
		((${#mine[@]})) || continue
		mask=$(cpu_mask "${mine[@]}")
		if [[ $(mask_norm "$(cat "$q/xps_cpus" 2>/dev/null || true)") != "$(mask_norm "$mask")" ]]; then
			plan "$q/xps_cpus" "$mask" "XPS ${q##*/}"
		fi
	done
fi

# --- Act -----------------------------------------------------------------------------------------

if ((${#W_PATH[@]} == 0)); then
	say "Nothing to change."
	exit 0
fi

((dry_run)) && say "Dry run: nothing will be changed."
# The state record for a planned write: a sysctl by name, anything else by path.
W_KIND=()
W_TARGET=()
W_FRESH=() # 1 when this run adds the record
state_load
for i in "${!W_PATH[@]}"; do
	if [[ ${W_PATH[i]} == "$TUNING_SYSCTL_ROOT"/* ]]; then
		key=${W_PATH[i]#"$TUNING_SYSCTL_ROOT"/}
		W_KIND[i]=sysctl
		W_TARGET[i]=${key//\//.}
	else
		W_KIND[i]=path
		W_TARGET[i]=${W_PATH[i]}
	fi
	W_FRESH[i]=1
	state_has "${W_KIND[i]}" "${W_TARGET[i]}" && W_FRESH[i]=0
	state_add "${W_KIND[i]}" "${W_TARGET[i]}" "${W_FROM[i]}"
done
if ((dry_run)); then
	say "would save previous values to $TUNING_STATE"
elif state_save; then
	say "saved previous values to $TUNING_STATE"
else
	printf 'error: cannot save previous values to %s: %s\n' "$TUNING_STATE" "$STATE_ERR" >&2
	printf 'Nothing was changed. Run as root, or choose another place with --state FILE.\n' >&2
	exit 1
fi

failed=()
for i in "${!W_PATH[@]}"; do
	say "+ $(write_command "${W_PATH[i]}" "${W_TO[i]}")    # ${W_NOTE[i]} (was ${W_FROM[i]:-empty})"
	((dry_run)) && continue
	if ! write_value "${W_PATH[i]}" "${W_TO[i]}"; then
		say "  cannot set ${W_NOTE[i]}: $WRITE_ERR"
		failed+=("${W_NOTE[i]}: $WRITE_ERR")
		((W_FRESH[i])) && state_forget "${W_KIND[i]}" "${W_TARGET[i]}"
	fi
done
((${#failed[@]})) && ! ((dry_run)) && { state_resave || true; }

if ((dry_run)); then
	say "Dry run: nothing was changed (${#W_PATH[@]} values would be written)."
	exit 0
fi
if ((${#failed[@]})); then
	say ""
	say "${#failed[@]} of ${#W_PATH[@]} could not be set:"
	for line in "${failed[@]}"; do say "  $line"; done
	((${#failed[@]} < ${#W_PATH[@]})) && say "The rest is in place; tuning/revert.sh restores what was changed."
	exit 1
fi
say "Done: ${#W_PATH[@]} values written. Undo with tuning/revert.sh."
