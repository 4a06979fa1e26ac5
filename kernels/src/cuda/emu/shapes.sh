# usage: shapes.sh OBS NACT MAXR "w0 w1 .." ["PROMPT_LEN RESPONSE_LEN"] (the prelude of modules.rs)
obs=$1; nact=$2; maxr=$3; ws=($4)
echo "#define OBS_DIM $obs"; echo "#define N_ACT $nact"; echo "#define NH ${#ws[@]}"; echo "#define MAXR $maxr"
if [ -n "${5:-}" ]; then seq=($5); echo "#define SEQ_P ${seq[0]}"; echo "#define SEQ_R ${seq[1]}"; fi
expr=0; for ((l=${#ws[@]}-1; l>=0; l--)); do expr="l == $l ? ${ws[$l]} : ($expr)"; done
echo "__host__ __device__ constexpr int hid(int l) { return $expr; }"
