# gnuplot -e "csv='long_context.csv'; png='long_context.png'" bench/plot_long_context.gp
# Left: one decode step of each attention kind (V4-Flash shapes) against the context length, per
# cache type. Right: the cache of the whole 43-layer V4-Flash at that context, per cache type.
set terminal pngcairo size 1400,560 font "sans,11"
set output png
set datafile separator ","
set multiplot layout 1,2
set logscale x 2
set grid
set key top left
set xlabel "context (tokens)"
set format x "2^{%L}"
set ylabel "decode step, ms (attention of one layer)"
set title "Decode step per layer kind (2-core VM, fast kernels)"
plot csv using ($2):(strcol(1) eq "f32" ? $4 : 1/0) skip 1 with linespoints lw 2 title "CSA, f32", \
     csv using ($2):(strcol(1) eq "compact" ? $4 : 1/0) skip 1 with linespoints lw 2 title "CSA, compact", \
     csv using ($2):(strcol(1) eq "f32" ? $5 : 1/0) skip 1 with linespoints lw 2 title "HCA, f32", \
     csv using ($2):(strcol(1) eq "compact" ? $5 : 1/0) skip 1 with linespoints lw 2 title "HCA, compact", \
     csv using ($2):(strcol(1) eq "f32" ? $3 : 1/0) skip 1 with linespoints lw 2 title "sliding", \
     csv using ($2):(strcol(1) eq "f32" ? $6 : 1/0) skip 1 with linespoints lw 2 dt 2 title "indexer scoring alone, f32"
set logscale y 2
set ylabel "cache bytes, GiB (one sequence, 43 layers)"
set title "V4-Flash cache against context"
plot csv using ($2):(strcol(1) eq "f32" ? $10/2**30 : 1/0) skip 1 with linespoints lw 2 title "f32", \
     csv using ($2):(strcol(1) eq "bf16" ? $10/2**30 : 1/0) skip 1 with linespoints lw 2 title "bf16", \
     csv using ($2):(strcol(1) eq "compact" ? $10/2**30 : 1/0) skip 1 with linespoints lw 2 title "compact"
unset multiplot
