#!/usr/bin/env bash
# tuning/revert.sh — put back what apply.sh and irq-affinity.sh changed.
#
# Owns: replaying the state file (sysctl values, IRQ/RPS/XPS masks, installed files), printing
# each command first, then removing the state file and its backups once everything is restored.
# --dry-run prints the commands and changes nothing. Values the state file does not mention are
# left alone: this undoes the scripts, it does not reset the machine to kernel defaults.
#
# Exit status: 0 when everything was restored (or there was nothing to restore), 1 when some
# values could not be restored (the state file is then kept so the run can be repeated),
# 2 on a usage error.

set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	cat <<'EOF'
usage: tuning/revert.sh [--dry-run] [--state FILE]

  --dry-run      print what would be restored; change nothing
  --state FILE   the file apply.sh wrote
                 (default $LIVESHARD_TUNING_STATE or /var/lib/liveshard-tuning/previous.conf)
EOF
}

dry_run=0
while (($#)); do
	case $1 in
	--dry-run | -n) dry_run=1 ;;
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
	*)
		usage >&2
		exit 2
		;;
	esac
	shift
done

if [[ ! -e $TUNING_STATE ]]; then
	say "Nothing to revert: no saved values at $TUNING_STATE."
	exit 0
fi
[[ -r $TUNING_STATE ]] || {
	printf 'error: cannot read %s (not root?)\n' "$TUNING_STATE" >&2
	exit 1
}

state_load
((dry_run)) && say "Dry run: nothing will be changed."
say "Restoring ${#ST_KIND[@]} saved values from $TUNING_STATE"

failed=()
restored=0
for i in "${!ST_KIND[@]}"; do
	kind=${ST_KIND[i]}
	target=${ST_TARGET[i]}
	value=${ST_VALUE[i]}
	case $kind in
	sysctl | path)
		if [[ $kind == sysctl ]]; then
			path=$(sysctl_path "$target")
			say "+ $(write_command "$path" "$value")    # $target"
		else
			path=$target
			say "+ $(write_command "$path" "$value")"
		fi
		label=$target
		((dry_run)) && continue
		if write_value "$path" "$value"; then
			restored=$((restored + 1))
		else
			say "  cannot restore $label: $WRITE_ERR"
			failed+=("$label: $WRITE_ERR")
		fi
		;;
	file)
		if [[ $value == absent ]]; then
			say "+ rm -f $(shell_quote "$target")    # installed by apply.sh --persist"
			((dry_run)) && continue
			ok=1
			err=$(rm -f "$target" 2>&1) || ok=0
		else
			backup=${value#backup:}
			say "+ cp -p $(shell_quote "$backup") $(shell_quote "$target")    # the file that was there before"
			((dry_run)) && continue
			ok=1
			err=$(cp -p "$backup" "$target" 2>&1) || ok=0
		fi
		if ((ok)); then
			restored=$((restored + 1))
		else
			reason=$(explain_write_error "$target" "$err")
			say "  cannot restore $target: $reason"
			failed+=("$target: $reason")
		fi
		;;
	*)
		say "  skipping an unknown record '$kind' in $TUNING_STATE"
		;;
	esac
done

if ((dry_run)); then
	say "Dry run: nothing was changed."
	exit 0
fi
if ((${#failed[@]})); then
	say ""
	say "${#failed[@]} could not be restored ($restored restored); $TUNING_STATE is kept:"
	for line in "${failed[@]}"; do
		say "  $line"
	done
	exit 1
fi
say "+ rm -f $(shell_quote "$TUNING_STATE")"
rm -f "$TUNING_STATE"
if [[ -d $(state_backup_dir) ]]; then
	say "+ rm -rf $(shell_quote "$(state_backup_dir)")"
	rm -rf "$(state_backup_dir)"
fi
say "Done: $restored restored."
