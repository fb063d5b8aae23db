#!/usr/bin/env bash
# tuning/apply.sh — set the kernel settings from settings.conf on this machine.
#
# Owns: changing sysctls that differ from the recommendations (never lowering one that is already
# better), saving what they were to the state file first so that revert.sh can put them back, and,
# with --persist, installing the sysctl.d drop-in and the limits.d file. It prints every command
# before running it; --dry-run prints them and changes nothing (no root needed).
#
# It does not touch process limits of running shells (a child cannot raise its parent's limits):
# liveshard.service and limits.d carry those. kernel.io_uring_disabled is reported, not changed.
#
# Exit status: 0 when every setting is at or beyond its recommendation (or not present here),
# 1 when some could not be set (each is listed with the reason), 2 on a usage error.

set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	cat <<EOF
usage: tuning/apply.sh [--dry-run] [--persist] [--state FILE]
       tuning/apply.sh --print-dropin[=reference]

  --dry-run      print what would be done; change nothing (works without root)
  --persist      also install $DROPIN_SYSCTL
                 and $DROPIN_LIMITS so the settings survive a reboot
  --state FILE   where previous values are saved for revert.sh
                 (default \$LIVESHARD_TUNING_STATE or /var/lib/liveshard-tuning/previous.conf)
  --print-dropin the sysctl.d file --persist would install on this host;
                 =reference prints the committed tuning/sysctl.d/90-liveshard.conf instead
EOF
}

dry_run=0
persist=0
print_dropin=""
while (($#)); do
	case $1 in
	--dry-run | -n) dry_run=1 ;;
	--persist) persist=1 ;;
	--state)
		(($# >= 2)) || die "--state needs a file name"
		TUNING_STATE=$2
		shift
		;;
	--state=*) TUNING_STATE=${1#--state=} ;;
	--print-dropin) print_dropin=host ;;
	--print-dropin=reference) print_dropin=reference ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		exit 2
		;;
	esac
	shift
done

load_settings

if [[ -n $print_dropin ]]; then
	render_sysctl_dropin "$print_dropin"
	exit 0
fi

# --- Plan: decide everything before changing anything -----------------------------------------

P_KEY=()    # sysctl to change
P_FROM=()   # its current value
P_TO=()     # the value to write
ok_count=0
absent=()
advice=()
manual=()

for i in "${!S_KEY[@]}"; do
	key=${S_KEY[i]}
	rec=${S_REC[i]}
	rule=${S_RULE[i]}
	case ${S_KIND[i]} in
	sysctl | sysctl-advise)
		if ! cur=$(sysctl_read "$key"); then
			absent+=("$key")
			continue
		fi
		if [[ $rec == unknown ]]; then
			advice+=("$key: no recommendation (cannot read $TUNING_MEMINFO); left at $cur")
			continue
		fi
		if value_ok "$cur" "$rec" "$rule"; then
			ok_count=$((ok_count + 1))
			continue
		fi
		if [[ ${S_KIND[i]} == sysctl-advise ]]; then
			advice+=("$key is $cur (recommended: $rec). Not changed: it is a security policy, and liveshard falls back to epoll without io_uring. To allow io_uring: sysctl -w $key=$rec")
			continue
		fi
		P_KEY+=("$key")
		P_FROM+=("$cur")
		P_TO+=("$(merge_target "$cur" "$rec" "$rule")")
		;;
	rlimit)
		cur=$(rlimit_shell "$key" || true)
		if [[ -n $cur ]] && ! value_ok "$cur" "$rec" "$rule"; then
			manual+=("${key/./ } of this shell is $(rlimit_display "$key" "$cur") (recommended: $(rlimit_display "$key" "$rec"))")
		fi
		;;
	esac
done

# Files --persist installs: path, and the command that prints their content.
F_PATH=()
F_DESC=()
if ((persist)); then
	F_PATH+=("$DROPIN_SYSCTL" "$DROPIN_LIMITS")
	F_DESC+=("$(shell_quote "$TUNING_DIR/apply.sh") --print-dropin" "cat $(shell_quote "$TUNING_DIR/limits.d/90-liveshard.conf")")
fi

file_content() {
	case $1 in
	"$DROPIN_SYSCTL") render_sysctl_dropin host ;;
	"$DROPIN_LIMITS") cat "$TUNING_DIR/limits.d/90-liveshard.conf" ;;
	esac
}

# --- Report and act ----------------------------------------------------------------------------

((dry_run)) && say "Dry run: nothing will be changed."
say "Settings already at or beyond the recommendation: $ok_count"
for key in "${absent[@]}"; do
	say "skip $key: not present here (n/a)"
done

failed=()
unchanged=() # recorded in the state file by this run, but the write failed
changed=0

if ((${#P_KEY[@]} == 0 && ${#F_PATH[@]} == 0)); then
	say "Nothing to change."
else
	# Save the previous values before the first write.
	state_load
	fresh=() # settings first recorded by this run
	for i in "${!P_KEY[@]}"; do
		state_has sysctl "${P_KEY[i]}" || fresh+=("${P_KEY[i]}")
		state_add sysctl "${P_KEY[i]}" "${P_FROM[i]}"
	done
	if ((dry_run)); then
		say "would save previous values to $TUNING_STATE"
	else
		state_ok=1
		for f in "${F_PATH[@]}"; do
			if ! state_add_file "$f"; then
				state_ok=0
				STATE_ERR="cannot back up $f under $(state_backup_dir)"
			fi
		done
		if ((state_ok)) && state_save; then
			say "saved previous values to $TUNING_STATE"
		else
			printf 'error: cannot save previous values to %s: %s\n' "$TUNING_STATE" "${STATE_ERR:-unknown error}" >&2
			printf 'Nothing was changed. Run as root, or choose another place with --state FILE.\n' >&2
			exit 1
		fi
	fi

	for i in "${!P_KEY[@]}"; do
		key=${P_KEY[i]}
		path=$(sysctl_path "$key")
		say "+ $(write_command "$path" "${P_TO[i]}")    # $key: ${P_FROM[i]} -> ${P_TO[i]}"
		((dry_run)) && continue
		if write_value "$path" "${P_TO[i]}"; then
			changed=$((changed + 1))
		else
			say "  cannot set $key: $WRITE_ERR"
			failed+=("$key: $WRITE_ERR")
			for k in "${fresh[@]}"; do
				[[ $k == "$key" ]] && unchanged+=("$key")
			done
		fi
	done

	if ((${#unchanged[@]})); then
		for key in "${unchanged[@]}"; do state_forget sysctl "$key"; done
		state_resave || true
	fi

	for i in "${!F_PATH[@]}"; do
		f=${F_PATH[i]}
		say "+ ${F_DESC[i]} > $(shell_quote "$f")"
		((dry_run)) && continue
		if err=$({ mkdir -p "$(dirname "$f")" && file_content "$f" >"$f.tmp.$$" &&
			chmod 0644 "$f.tmp.$$" && mv -f "$f.tmp.$$" "$f"; } 2>&1); then
			changed=$((changed + 1))
		else
			rm -f "$f.tmp.$$" 2>/dev/null || true
			reason=$(explain_write_error "$f" "$err")
			say "  cannot install $f: $reason"
			failed+=("$f: $reason")
		fi
	done
fi

# --- Summary ------------------------------------------------------------------------------------

for line in "${advice[@]}"; do
	say "note: $line"
done
if ((${#manual[@]})); then
	for line in "${manual[@]}"; do
		say "note: $line"
	done
	say "note: a script cannot raise its caller's limits. liveshard.service sets them for the service"
	say "      (LimitNOFILE, LimitMEMLOCK); for a login shell use --persist and log in again, or run"
	say "      'ulimit -n 1048576 -l unlimited' as root before starting the server by hand."
fi

if ((dry_run)); then
	say "Dry run: nothing was changed (${#P_KEY[@]} settings and ${#F_PATH[@]} files would be written)."
	exit 0
fi
if ((${#failed[@]})); then
	say ""
	say "${#failed[@]} could not be set (${changed} changed):"
	for line in "${failed[@]}"; do
		say "  $line"
	done
	((changed)) && say "What was changed can be restored with: tuning/revert.sh"
	exit 1
fi
if ((changed)); then
	say "Done: $changed changed. Check with tuning/check.sh; undo with tuning/revert.sh."
fi
