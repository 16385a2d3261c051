# bash completion for orch(1).
# Commands and their options come from `orch help` itself, so they follow
# the installed version; `orch ctl` service names come from the running
# orchestrator (`orch ctl status`, one second at most).

_orch_options() {  # the --options one command's help mentions
  orch help "$1" 2>/dev/null | grep -o -- '--[a-z][a-z-]*' | sort -u
}

_orch_services() {  # [SOCKET] [TRUST_UID]
  local opts=()
  [ -n "$1" ] && opts=(--socket "$1")
  [ -n "${2:-}" ] && opts+=(--trust-uid "$2")
  orch ctl "${opts[@]}" --timeout 1 status 2>/dev/null | awk 'NR > 1 && $1 != "" { print $1 }'
}

_orch() {
  local cur prev words cword
  _init_completion 2>/dev/null || {
    cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}
    words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD
  }
  local commands="run repl ctl attach top watchdog every beat import test version help"
  local cmd="" i
  for ((i = 1; i < cword; i++)); do
    case ${words[i]} in
      -*) ;;
      *) cmd=${words[i]}; break ;;
    esac
  done

  if [ -z "$cmd" ]; then
    if [[ $cur == -* ]]; then
      COMPREPLY=($(compgen -W "-e --help --version" -- "$cur"))
    else
      COMPREPLY=($(compgen -W "$commands" -- "$cur"))
      compopt -o filenames 2>/dev/null
      COMPREPLY+=($(compgen -f -X '!*.lua' -- "$cur") $(compgen -d -- "$cur"))
    fi
    return
  fi

  case $cmd in
    help)
      COMPREPLY=($(compgen -W "$commands" -- "$cur")) ;;
    ctl)
      local sub="" socket="" trust="" j
      for ((j = i + 1; j < cword; j++)); do
        case ${words[j]} in
          --socket) socket=${words[j+1]}; ((j++)) ;;
          --trust-uid) trust=${words[j+1]}; ((j++)) ;;
          --timeout) ((j++)) ;;
          -*) ;;
          *) sub=${words[j]}; break ;;
        esac
      done
      if [ "$prev" = --socket ]; then
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
      elif [ -z "$sub" ]; then
        if [[ $cur == -* ]]; then
          COMPREPLY=($(compgen -W "$(_orch_options ctl)" -- "$cur"))
        else
          COMPREPLY=($(compgen -W "status is-active health start stop restart signal freeze thaw tail events trigger pause resume eval reload reexec shutdown ping" -- "$cur"))
        fi
      else
        case $sub in
          status|is-active|start|stop|restart|signal|freeze|thaw|tail)
            if [ "$sub" = signal ] && [ "$prev" != signal ]; then
              COMPREPLY=($(compgen -W "TERM INT HUP QUIT KILL USR1 USR2 STOP CONT" -- "$cur"))
            else
              local extra=""
              case $sub in start|stop|restart|freeze|thaw) extra=all ;; esac
              [[ $cur == -* ]] && extra="$extra --help --json --socket --timeout --trust-uid"
              case $sub in start|restart) [[ $cur == -* ]] && extra="$extra --wait" ;; esac
              COMPREPLY=($(compgen -W "$(_orch_services "$socket" "$trust") $extra" -- "$cur"))
            fi ;;
        esac
      fi ;;
    run|repl)
      if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_orch_options "$cmd") --help" -- "$cur"))
      else
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -X '!*.lua' -- "$cur") $(compgen -d -- "$cur"))
      fi ;;
    *)
      if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_orch_options "$cmd") --help" -- "$cur"))
      else
        compopt -o default 2>/dev/null
        COMPREPLY=()
      fi ;;
  esac
}
complete -F _orch orch
