# bash completion for rossfs(8).
# Installed as /usr/share/bash-completion/completions/rossfs; works without the bash-completion
# package too (`source` this file).
#
# `-o` completes option names, also after a comma (`-o url=...,pass<TAB>`); the list is read
# from `rossfs --help` the first time it is needed, so it always matches the installed program.
# Values of path options (passwd_file=, logfile=, cache_dir=, mime=) complete as file names, the
# second positional argument as a directory.

# Prints the -o option names of the rossfs program $1, `name=` for those that take a value.
_rossfs_option_names() {
    "$1" --help 2>/dev/null | awk '
        /^Options \(-o\):$/ { on = 1; next }
        on && !/^  / { on = 0 }
        on && /^  [a-z]/ {
            line = substr($0, 3)
            if (!match(line, /^[a-z0-9_]+(=[^ ]+)?(, [a-z0-9_]+)*/)) next
            n = split(substr(line, 1, RLENGTH), names, ", ")
            for (i = 1; i <= n; i++) {
                name = names[i]
                if (index(name, "=")) name = substr(name, 1, index(name, "="))
                print name
            }
        }'
}

_rossfs() {
    local line=${COMP_LINE:0:COMP_POINT}
    # The word under the cursor and the one before it, split on blanks only: readline also
    # breaks words at '=' and ':', which would cut `url=http://...` apart.
    local cur=${line##*[[:space:]]}
    local before=${line%"$cur"}
    before=${before%"${before##*[![:space:]]}"}
    local prev=${before##*[[:space:]]}
    local prog=${COMP_WORDS[0]:-rossfs}
    COMPREPLY=()

    if [[ $prev == -o ]]; then
        local done=
        local word=$cur
        if [[ $cur == *,* ]]; then
            done=${cur%,*},
            word=${cur##*,}
        fi
        if [[ $word == *=* ]]; then
            local name=${word%%=*}
            local value=${word#*=}
            case $name in
            passwd_file | logfile | cache_dir | mime)
                local f
                while IFS= read -r f; do
                    COMPREPLY+=("$done$name=$f")
                done < <(compgen -f -- "$value")
                ;;
            esac
        else
            if [[ -z ${_rossfs_names_cache-} ]]; then
                _rossfs_names_cache=$(_rossfs_option_names "$prog")
            fi
            local n
            for n in $_rossfs_names_cache; do
                [[ $n == "$word"* ]] && COMPREPLY+=("$done$n")
            done
        fi
        # An option with a value, or one the user may follow with a comma: no space yet.
        compopt -o nospace 2>/dev/null
        # Hand back only the part after the last '=' or ':' that readline split off itself.
        local cut=${cur%"${cur##*[=:]}"}
        if [[ -n $cut ]]; then
            COMPREPLY=("${COMPREPLY[@]#"$cut"}")
        fi
        return 0
    fi

    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W '-o -f --foreground -h --help -V --version' -- "$cur")
        return 0
    fi

    # Which positional argument is this? Skip flags and the value of -o.
    local words
    read -r -a words <<<"$before"
    local i positional=0
    for ((i = 1; i < ${#words[@]}; i++)); do
        case ${words[i]} in
        -o) ((i++)) ;;
        -o?*) ;;
        -*) ;;
        *) ((positional++)) ;;
        esac
    done
    if ((positional == 1)); then
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -d -- "$cur")
    fi
    return 0
}

complete -F _rossfs rossfs
