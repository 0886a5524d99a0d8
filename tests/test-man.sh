#!/usr/bin/env bash
# The man pages (docs/man/*.pod, built by make with pod2man): each renders
# with `man -l` without a warning from man or groff and within 80 columns;
# each backend has its page, listing the keys of --help and no others;
# every command of --help is in ubdkit(8); and
# for each command the options of its --help and of its man page are the
# same set, compared both ways.
source "${srcdir:-.}/functions.sh"
requires_prog man
requires_prog groff
make_tmpdir

mandir=${builddir:-.}/../docs/man
poddir=$srcdir/../docs/man
pages="ubdkit ubdkit-serve ubdkit-add ubdkit-up ubdkit-stats
  ubdkit-memory ubdkit-file ubdkit-null ubdkit-nbd ubdkit-rbd ubdkit-nbdkit"

# Options and commands allowed to be missing from --help: none (the
# mechanism stays for options documented before they land).
pending=""
pending_commands=""

errors=0
problem () { echo "$0: $*" >&2; errors=$((errors + 1)); }

# 1. Every page renders, silently, in 80 columns.
for p in $pages; do
  page=$mandir/$p.8
  [ -s "$page" ] || { problem "$page: not built"; continue; }
  warnings=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 \
             man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null)
  [ -z "$warnings" ] || problem "$p.8: man/groff warnings: $warnings"
  LC_ALL=C.UTF-8 MANWIDTH=80 man -E UTF-8 -l "$page" >"$tmp/$p.txt" 2>/dev/null ||
    problem "$p.8: man -l failed"
  grep -q '^NAME' "$tmp/$p.txt" && grep -q "^       $p\b" "$tmp/$p.txt" ||
    problem "$p.8: no NAME section naming $p"
  grep -q '^SEE ALSO' "$tmp/$p.txt" || problem "$p.8: no SEE ALSO section"
  long=$(awk 'length($0) > 80' "$tmp/$p.txt")
  [ -z "$long" ] || problem "$p.8: lines wider than 80 columns: $long"
done

# ubdkit-down(8) is ubdkit-up(8), by name, as installed (man8/).
mkdir -p "$tmp/man/man8"
cp "$mandir"/*.8 "$tmp/man/man8/"
LC_ALL=C.UTF-8 MANPATH=$tmp/man MANWIDTH=80 man -E UTF-8 ubdkit-down 2>&1 |
  grep -q '^       ubdkit-up, ubdkit-down - ' ||
  problem "man ubdkit-down does not show ubdkit-up(8)"

# 2. Each backend of `ubdkit serve --help` has its page.
"$UBDKIT" serve --help >"$tmp/serve-help"
backends=$(sed -n '/^Backends:/,$s/^  \([a-z][a-z0-9]*\)[ :].*/\1/p' "$tmp/serve-help")
[ -n "$backends" ] || problem "no backends found in 'ubdkit serve --help'"
for b in $backends; do
  [ -s "$poddir/ubdkit-$b.pod" ] || problem "backend $b: no docs/man/ubdkit-$b.pod"
  case " $(echo $pages) " in *" ubdkit-$b "*) ;; *) problem "backend $b: its page is not in this test's list" ;; esac
done

# ... and the same keys in --help ("           key=VALUE  text" under the
# backend) as in its page's PARAMETERS (=item B<key=>...), both ways.
sed -n '/^Backends:/,$p' "$tmp/serve-help" | awk '
  /^  [a-z]/ { split ($1, a, ":"); b = a[1] }
  /^           [a-z][a-z-]*=/ { k = $1; sub (/=.*/, "", k); print b, k }' |
  sort -u >"$tmp/help-keys"
[ -s "$tmp/help-keys" ] || problem "no backend keys found in 'ubdkit serve --help'"
for b in $backends; do
  [ -s "$poddir/ubdkit-$b.pod" ] || continue
  sed -n '/^=head1 PARAMETERS/,/^=head1/s/^=item B<\([a-z][a-z-]*\)=>.*/\1/p' \
    "$poddir/ubdkit-$b.pod" | sort -u >"$tmp/man-keys-$b"
  awk -v b="$b" '$1 == b { print $2 }' "$tmp/help-keys" >"$tmp/help-keys-$b"
  for k in $(comm -23 "$tmp/help-keys-$b" "$tmp/man-keys-$b"); do
    problem "backend $b: key $k= is in --help but not in ubdkit-$b(8)"
  done
  for k in $(comm -13 "$tmp/help-keys-$b" "$tmp/man-keys-$b"); do
    problem "backend $b: key $k= is in ubdkit-$b(8) but not in --help"
  done
done

# 3. Each command of `ubdkit --help` is in ubdkit(8)'s COMMANDS.
commands=$("$UBDKIT" --help | sed -n '/^Commands:/,/^$/s/^  \([a-z][a-z]*\) .*/\1/p')
[ -n "$commands" ] || problem "no commands found in 'ubdkit --help'"
for c in $commands; do
  grep -Eq "^=item (.*, )?B<$c>" "$poddir/ubdkit.pod" ||
    problem "command $c: not in ubdkit(8)'s COMMANDS"
done

# The options of a command's help: the option column of its option
# lines ("  -U, --unix PATH   text": the part before two blanks, split on
# ", "), and every option of a one-line "usage:" line.  -h/--help are not
# compared (the help does not list itself).
help_options () {
  awk '
    tolower ($0) ~ /^usage:/ {
      s = $0
      while (match (s, /[[ |]--?[A-Za-z][A-Za-z0-9-]*/)) {
        print substr (s, RSTART + 1, RLENGTH - 1)
        s = substr (s, RSTART + RLENGTH)
      }
      next
    }
    /^ +-/ {
      s = $0; sub (/^ +/, "", s); sub (/   *.*/, "", s)
      n = split (s, part, /, /)
      for (i = 1; i <= n; i++)
        if (part[i] ~ /^-/) { split (part[i], w, / |=/); print w[1] }
    }' | grep -Ev '^(-h|--help)$' | sort -u
}

# The options of COMMAND in the man pages: the B<-...> of each =item under
# a "=head2 B<ubdkit COMMAND>" heading, or anywhere in ubdkit-COMMAND.pod
# outside such headings.
man_options () {
  local cmd=$1 f
  for f in "$poddir"/*.pod; do
    awk -v want="$cmd" -v def="$(basename "$f" .pod | sed 's/^ubdkit-//')" '
      /^=head1/ { cmd = def }
      /^=head2/ && match ($0, /B<ubdkit [a-z]+>/) {
        cmd = substr ($0, RSTART + 9, RLENGTH - 10)
      }
      /^=item B<-/ && cmd == want {
        s = $0
        while (match (s, /B<--?[A-Za-z][A-Za-z0-9-]*>/)) {
          print substr (s, RSTART + 2, RLENGTH - 3)
          s = substr (s, RSTART + RLENGTH)
        }
      }' "$f"
  done | grep -Ev '^(-h|--help)$' | sort -u
}

# 4. The same options in --help and in the man page, for every command.
compared=0 compared_cmds=
for c in $commands $pending_commands; do
  case " $compared_cmds " in *" $c "*) continue ;; esac
  compared_cmds="$compared_cmds $c"
  status=0
  out=$(timeout 10 "$UBDKIT" "$c" --help 2>&1 </dev/null) || status=$?
  [ $status -ne 124 ] || problem "ubdkit $c --help: no answer in 10 s"
  if grep -q "unknown command" <<<"$out"; then
    case " $pending_commands " in
      *" $c "*) echo "$0: note: this ubdkit has no '$c' yet: not compared"; continue ;;
    esac
    problem "ubdkit $c: unknown command"; continue
  fi
  # Commands without --help print their usage line for bad arguments.
  if grep -q "unknown option" <<<"$out"; then
    out=$(timeout 10 "$UBDKIT" "$c" 2>&1 </dev/null) || true
  fi
  help_options <<<"$out" >"$tmp/help-$c"
  man_options "$c" >"$tmp/man-$c"
  for o in $(comm -23 "$tmp/help-$c" "$tmp/man-$c"); do
    problem "ubdkit $c: $o is in --help but not in the man page"
  done
  for o in $(comm -13 "$tmp/help-$c" "$tmp/man-$c"); do
    case " $pending " in *" $c:$o "*) continue ;; esac
    problem "ubdkit $c: $o is in the man page but not in --help"
  done
  compared=$((compared + $(wc -l <"$tmp/help-$c")))
done
# The parsers must have found something to compare (serve alone has 40).
[ "$compared" -ge 60 ] ||
  problem "only $compared options found in the --help texts: is the parser broken?"

[ $errors -eq 0 ] || fail "$errors problems with the man pages"
echo "$0: $(echo $pages | wc -w) pages render; $compared options of --help all documented and no others"
