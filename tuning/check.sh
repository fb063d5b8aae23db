#!/usr/bin/env bash
# tuning/check.sh — report how this machine compares with liveshard's recommendations.
#
# Owns: the read-only report. For every row of settings.conf it prints the current value, the
# recommended value and rule, and OK / DIFF / n/a; process limits are shown for this shell and,
# when installed, for liveshard.service and the limits.d file. It changes nothing and needs no root.
#
# Exit status: 0 when nothing differs (n/a rows do not count), 1 when something differs,
# 2 on a usage error.

set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	cat <<'EOF'
usage: tuning/check.sh [--json] [--quiet]

Compares kernel settings and process limits with tuning/settings.conf.
  --json    one JSON object instead of the table
  --quiet   print nothing; only the exit status (0 = all OK, 1 = something differs)

Exit status: 0 all OK (settings not present here are n/a and do not count), 1 something differs.
Read tuning/README.md for what each setting does; tuning/apply.sh --dry-run shows the fix.
EOF
}

json=0
quiet=0
while (($#)); do
	case $1 in
	--json) json=1 ;;
	--quiet | -q) quiet=1 ;;
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

# Result rows.
R_NAME=()
R_SOURCE=()
R_CUR=()
R_REC=()
R_RULE=()
R_STATUS=()
R_WHY=()

add_row() {
	R_NAME+=("$1")
	R_SOURCE+=("$2")
	R_CUR+=("$3")
	R_REC+=("$4")
	R_RULE+=("$5")
	R_STATUS+=("$6")
	R_WHY+=("$7")
}

# rlimit_row KEY SOURCE_LABEL SOURCE_ID VALUE REC RULE WHY
rlimit_row() {
	local key=$1 label=$2 source=$3 cur=$4 rec=$5 rule=$6 why=$7 status
	if value_ok "$cur" "$rec" "$rule"; then status=OK; else status=DIFF; fi
	add_row "${key/./ } ($label)" "$source" "$(rlimit_display "$key" "$cur")" \
		"$(rlimit_display "$key" "$rec")" "$rule" "$status" "$why"
}

unit_installed=0
limitsd_installed=0
[[ -f $UNIT_FILE ]] && unit_installed=1
[[ -f $DROPIN_LIMITS ]] && limitsd_installed=1

for i in "${!S_KEY[@]}"; do
	key=${S_KEY[i]}
	rec=${S_REC[i]}
	rule=${S_RULE[i]}
	why=${S_WHY[i]}
	case ${S_KIND[i]} in
	sysctl | sysctl-advise)
		if ! cur=$(sysctl_read "$key"); then
			add_row "$key" sysctl "n/a (not present here)" "$rec" "$rule" n/a "$why"
		elif [[ $rec == unknown ]]; then
			add_row "$key" sysctl "$cur" "unknown (cannot read $TUNING_MEMINFO)" "$rule" n/a "$why"
		elif value_ok "$cur" "$rec" "$rule"; then
			add_row "$key" sysctl "$cur" "$rec" "$rule" OK "$why"
		else
			add_row "$key" sysctl "$cur" "$rec" "$rule" DIFF "$why"
		fi
		;;
	rlimit)
		if cur=$(rlimit_shell "$key") && [[ -n $cur ]]; then
			rlimit_row "$key" "this shell" shell "$cur" "$rec" "$rule" "$why"
		else
			add_row "${key/./ } (this shell)" shell "n/a (cannot read $TUNING_LIMITS_FILE)" \
				"$(rlimit_display "$key" "$rec")" "$rule" n/a "$why"
		fi
		if ((unit_installed)); then
			cur=$(rlimit_unit "$key")
			rlimit_row "$key" "liveshard.service" unit "$cur" "$rec" "$rule" "$why"
		fi
		if ((limitsd_installed)); then
			cur=$(rlimit_limitsd "$key")
			rlimit_row "$key" "limits.d" limits.d "$cur" "$rec" "$rule" "$why"
		fi
		;;
	esac
done

differ=0
absent=0
for s in "${R_STATUS[@]}"; do
	case $s in
	DIFF) differ=$((differ + 1)) ;;
	n/a) absent=$((absent + 1)) ;;
	esac
done

json_str() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	s=${s//$'\t'/ }
	printf '"%s"' "$s"
}

if ((quiet)); then
	:
elif ((json)); then
	printf '{"ok":%s,"differ":%d,"not_present":%d,"settings":[' \
		"$( ((differ == 0)) && echo true || echo false)" "$differ" "$absent"
	for i in "${!R_NAME[@]}"; do
		((i > 0)) && printf ','
		printf '{"setting":%s,"source":%s,"current":%s,"recommended":%s,"rule":%s,"status":%s,"why":%s}' \
			"$(json_str "${R_NAME[i]}")" "$(json_str "${R_SOURCE[i]}")" "$(json_str "${R_CUR[i]}")" \
			"$(json_str "${R_REC[i]}")" "$(json_str "${R_RULE[i]}")" "$(json_str "${R_STATUS[i]}")" \
			"$(json_str "${R_WHY[i]}")"
	done
	printf ']}\n'
else
	w1=7 w2=7 w3=11 w4=4
	for i in "${!R_NAME[@]}"; do
		((${#R_NAME[i]} > w1)) && w1=${#R_NAME[i]}
		((${#R_CUR[i]} > w2)) && w2=${#R_CUR[i]}
		((${#R_REC[i]} > w3)) && w3=${#R_REC[i]}
		((${#R_RULE[i]} > w4)) && w4=${#R_RULE[i]}
	done
	printf '%-*s  %-*s  %-*s  %-*s  %s\n' "$w1" SETTING "$w2" CURRENT "$w3" RECOMMENDED "$w4" RULE STATUS
	for i in "${!R_NAME[@]}"; do
		printf '%-*s  %-*s  %-*s  %-*s  %s\n' "$w1" "${R_NAME[i]}" "$w2" "${R_CUR[i]}" \
			"$w3" "${R_REC[i]}" "$w4" "${R_RULE[i]}" "${R_STATUS[i]}"
	done
	echo
	if ((differ > 0)); then
		say "Why the differing ones matter:"
		for i in "${!R_NAME[@]}"; do
			[[ ${R_STATUS[i]} == DIFF ]] && printf '  %-*s  %s\n' "$w1" "${R_NAME[i]}" "${R_WHY[i]}"
		done
		echo
	fi
	((unit_installed)) || say "note: $UNIT_FILE is not installed; limits shown are this shell's (README: systemd unit)."
	((limitsd_installed)) || say "note: $DROPIN_LIMITS is not installed (tuning/apply.sh --persist installs it)."
	if ((differ > 0)); then
		say "$differ of ${#R_NAME[@]} settings differ$( ((absent)) && printf ', %d not present here' "$absent")."
		say "Preview the changes with: tuning/apply.sh --dry-run   (details: tuning/README.md)"
	else
		say "All ${#R_NAME[@]} settings match the recommendations$( ((absent)) && printf ' (%d not present here)' "$absent")."
	fi
fi

((differ == 0))
