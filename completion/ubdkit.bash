# bash completion for ubdkit(8): commands, options and their values,
# backend names and parameters, ublk device ids, device config names.
#
# Self-contained: it needs none of bash-completion's helpers, so that it
# also works sourced by hand (`. completion/ubdkit.bash`).  The option
# lists are those of each command's --help (tests/test-completion.sh
# compares them).

_ubdkit_commands='serve add del list recover resize upgrade features up down stats'

_ubdkit_serve_opts='-U --unix -p --port --bind -e --export -E --export-spec
  --description -r --readonly --max-connections --handshake-timeout
  --tls --tls-certificates --tls-psk --tls-verify-peer --tls-allow-dn
  --tls-priority --tls-ktls --run --daemonize -P --pidfile -v --verbose
  -t --threads --depth --buffer-size --workers --poll --io-flusher
  --no-mlock --oom-score-adj --allow --deny -u --user -g --group
  --unix-mode --unix-group --log --control -h --help
  --filter'
# nbdkit compat (serve):
_ubdkit_serve_opts+=' -D --debug -V --version --dump-plugin --dump-config
  -s --single --mask-handshake'
_ubdkit_add_opts='-n --id -q --queues -d --depth --queue-threads --max-io
  -r --readonly --foreground --recovery --no-recovery --poll --zero-copy
  --no-zero-copy --batch-io --watchdog --io-flusher --no-mlock
  --oom-score-adj -v --verbose --log -h --help
  --filter'
_ubdkit_del_opts='--force --all'
_ubdkit_list_opts='--json'
_ubdkit_recover_opts='--foreground --watchdog --poll --io-flusher
  --no-mlock --oom-score-adj --log'
_ubdkit_resize_opts='--shrink'
_ubdkit_upgrade_opts=''
_ubdkit_features_opts=''
_ubdkit_up_opts='--config-dir --all'
_ubdkit_down_opts='--config-dir --force --all'
_ubdkit_stats_opts='--json -h --help'

# Options that take a value, as the next word or after '='.
_ubdkit_arg_opts='-U --unix -p --port --bind -e --export -E --export-spec
  --description --max-connections --handshake-timeout --tls
  --tls-certificates --tls-psk --tls-allow-dn --tls-priority --tls-ktls
  --run -P --pidfile -t --threads --depth --buffer-size --workers --poll
  --io-flusher --oom-score-adj --allow --deny -u --user -g --group
  --unix-mode --unix-group --log --control -n --id -q --queues -d
  --queue-threads --max-io --recovery --watchdog --config-dir
  --filter'
# nbdkit compat:
_ubdkit_arg_opts+=' -D --debug --mask-handshake'

_ubdkit_backends='memory file null nbd rbd nbdkit:'

# Does the blank-separated LIST hold WORD?
_ubdkit_in ()
{
  case " $(echo $2) " in *" $1 "*) return 0 ;; esac
  return 1
}

# COMPREPLY from the words of $1 that start with $2.
_ubdkit_reply ()
{
  local IFS=$' \t\n'
  COMPREPLY=($(compgen -W "$1" -- "$2"))
}

# The ids of the ublk devices, from `ubdkit list --json`.
_ubdkit_device_ids ()
{
  "$1" list --json 2>/dev/null |
    sed -n 's/.*"id": *\([0-9][0-9]*\).*/\1/p'
}

# The names NAME of DIR/NAME.conf.
_ubdkit_config_names ()
{
  local f
  for f in "$1"/*.conf; do
    [ -e "$f" ] || continue
    f=${f##*/}
    echo "${f%.conf}"
  done
}

# The nbdkit plugins of the plugin directory ubdkit was built with (its
# --help names one), else of the usual places.
_ubdkit_nbdkit_plugins ()
{
  local dir dirs f
  dirs=$("$1" serve --help 2>/dev/null |
         sed -n 's|.*[ (]\(/[^ ]*\)/nbdkit-[^/ ]*-plugin\.so.*|\1|p')
  for dir in ${dirs:-/usr/lib/*/nbdkit/plugins /usr/lib*/nbdkit/plugins}; do
    for f in "$dir"/nbdkit-*-plugin.so; do
      [ -e "$f" ] || continue
      f=${f##*/nbdkit-}
      echo "nbdkit:${f%-plugin.so}"
    done
  done
}

# The nbdkit filters of nbdkit's filter directory (--filter).
_ubdkit_nbdkit_filters ()
{
  local dir f
  dir=$(pkg-config --variable=filterdir nbdkit 2>/dev/null)
  for f in ${dir:-/usr/lib/*/nbdkit/filters}/nbdkit-*-filter.so; do
    [ -e "$f" ] || continue
    f=${f##*/nbdkit-}
    echo "${f%-filter.so}"
  done
}

# Complete the value of option $1 ($2: the value typed so far).
_ubdkit_option_value ()
{
  local IFS=$'\n'
  case $1 in
    --tls) _ubdkit_reply 'off on require' "$2" ;;
    --tls-ktls) _ubdkit_reply 'auto off' "$2" ;;
    --io-flusher) _ubdkit_reply 'on off require' "$2" ;;
    --oom-score-adj) _ubdkit_reply 'off -1000 0' "$2" ;;
    --recovery) _ubdkit_reply 'hold fail-io off' "$2" ;;
    --log)
      COMPREPLY=($(compgen -W $'stderr\nsyslog' -- "$2") $(compgen -f -- "$2"))
      compopt -o filenames 2>/dev/null ;;
    -U|--unix|-P|--pidfile|--tls-psk|--control)
      COMPREPLY=($(compgen -f -- "$2")); compopt -o filenames 2>/dev/null ;;
    --tls-certificates|--config-dir)
      COMPREPLY=($(compgen -d -- "$2")); compopt -o filenames 2>/dev/null ;;
    --filter)
      COMPREPLY=($(compgen -W "$(_ubdkit_nbdkit_filters)" -- "$2")
                 $(compgen -f -- "$2")) ;;
    -u|--user) COMPREPLY=($(compgen -u -- "$2")) ;;
    -g|--group|--unix-group) COMPREPLY=($(compgen -g -- "$2")) ;;
    *) COMPREPLY=() ;;
  esac
}

# Complete a backend parameter: KEY= of backend $1, or a value.
_ubdkit_backend_param ()
{
  local backend=$1 cur=$2 keys
  case $backend in
    memory) keys='size= reserve=' ;;
    file) keys='file= direct= readonly=' ;;
    null) keys='size=' ;;
    nbd) keys='uri= connections= retry= retry-delay= readonly=' ;;
    rbd) keys='pool= image= namespace= snapshot= conf= id= keyring= readonly=' ;;
    *) keys= ;;
  esac
  case $cur in
    file=*)
      [ "$backend" = file ] || return
      local IFS=$'\n'
      COMPREPLY=($(compgen -f -- "${cur#file=}"))
      COMPREPLY=("${COMPREPLY[@]/#/file=}")
      compopt -o filenames 2>/dev/null ;;
    direct=*|readonly=*) _ubdkit_reply "${cur%%=*}=true ${cur%%=*}=false" "$cur" ;;
    *=*) COMPREPLY=() ;;
    *) _ubdkit_reply "$keys" "$cur"; compopt -o nospace 2>/dev/null ;;
  esac
}

_ubdkit ()
{
  local -a words=()
  local i w cur prev cword=0 join=0

  # bash splits "size=1G" and "nbdkit:memory" at '=' and ':'
  # (COMP_WORDBREAKS): join them back into the words ubdkit sees.
  for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
    w=${COMP_WORDS[i]}
    if ((i > 0)) && [[ $w == [=:] ]]; then
      words[${#words[@]}-1]+=$w
      join=1
    elif ((join)); then
      words[${#words[@]}-1]+=$w
      join=0
    else
      words+=("$w")
    fi
    ((i == COMP_CWORD)) && cword=$((${#words[@]} - 1))
  done
  cur=${words[cword]}
  prev=
  ((cword > 0)) && prev=${words[cword-1]}

  _ubdkit_complete "$cur" "$prev" "$cword" "${words[@]}"

  # bash replaces only the part of the word after its last break.
  if [[ $cur == *[=:]* && ${COMP_WORDS[COMP_CWORD]} != "$cur" ]]; then
    local strip=${cur%"${cur##*[=:]}"}
    COMPREPLY=("${COMPREPLY[@]#"$strip"}")
  fi
}

# The completion proper, on the joined words: CUR PREV CWORD WORD...
_ubdkit_complete ()
{
  local cur=$1 prev=$2 cword=$3 i w cmd= backend= cdir=/etc/ubdkit/devices.d
  shift 3
  local -a words=("$@")
  local prog=${words[0]}

  COMPREPLY=()
  # The command, its options so far, and its first operand: the backend
  # of serve and add, the device id or config name of the others.
  for ((i = 1; i < cword; i++)); do
    w=${words[i]}
    if [ -z "$cmd" ]; then
      cmd=$w
    elif [ -z "$backend" ] && [ "$w" = --config-dir ]; then
      cdir=${words[i+1]}; i=$((i + 1))
    elif [ -z "$backend" ] && [[ $w == --config-dir=* ]]; then
      cdir=${w#--config-dir=}
    elif [ -z "$backend" ] && _ubdkit_in "$w" "$_ubdkit_arg_opts"; then
      i=$((i + 1))              # its value
    elif [ -z "$backend" ] && [[ $w != -* ]]; then
      backend=$w
    fi
  done

  if [ -z "$cmd" ]; then
    _ubdkit_reply "$_ubdkit_commands --help --version" "$cur"
    return
  fi
  local optsvar=_ubdkit_${cmd}_opts
  _ubdkit_in "$cmd" "$_ubdkit_commands" || return

  # An option's value: "--opt VALUE" or "--opt=VALUE".
  if [ -z "$backend" ] && [[ $cur == --*=* ]]; then
    _ubdkit_option_value "${cur%%=*}" "${cur#*=}"
    COMPREPLY=("${COMPREPLY[@]/#/${cur%%=*}=}")
    return
  fi
  if [ -z "$backend" ] && _ubdkit_in "$prev" "$_ubdkit_arg_opts"; then
    _ubdkit_option_value "$prev" "$cur"
    return
  fi
  if [[ $cur == -* ]] && [ -z "$backend" ]; then
    _ubdkit_reply "${!optsvar}" "$cur"
    return
  fi

  case $cmd in
    serve|add)
      if [ -z "$backend" ]; then
        if [[ $cur == nbdkit:* ]]; then
          _ubdkit_reply "$(_ubdkit_nbdkit_plugins "$prog")" "$cur"
        else
          _ubdkit_reply "$_ubdkit_backends" "$cur"
          [[ ${COMPREPLY[*]} == nbdkit: ]] && compopt -o nospace 2>/dev/null
        fi
      else
        _ubdkit_backend_param "$backend" "$cur"
      fi ;;
    del|recover|resize|upgrade)
      # The id is the first operand (resize's SIZE follows it).
      [ -z "$backend" ] || return
      _ubdkit_reply "$(_ubdkit_device_ids "$prog")" "$cur" ;;
    stats)
      [ -z "$backend" ] || return
      local IFS=$'\n'
      COMPREPLY=($(compgen -W "$(_ubdkit_device_ids "$prog")" -- "$cur")
                 $(compgen -f -- "$cur"))
      compopt -o filenames 2>/dev/null ;;
    up|down)
      _ubdkit_reply "$(_ubdkit_config_names "$cdir")" "$cur" ;;
  esac
}

complete -F _ubdkit ubdkit
