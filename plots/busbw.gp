# Bus bandwidth against message size per collective, log x. Variables: datafile (one block per
# collective, separated by two blank lines, columns: bytes busbw_gbps), names (space-separated block
# titles), outfile, fmt.
if (!exists("fmt")) fmt = 'svg'
if (fmt eq 'png') { set terminal pngcairo size 900,560 font ",10" } else { set terminal svg size 900,560 dynamic font ",10" background rgb 'white' }
set output outfile
set title "busbw per collective (nccl-tests convention)"
set xlabel "message size (bytes per rank)"
set ylabel "busbw (GB/s, median)"
set logscale x 2
set format x "%.0b%B"
set key top left noenhanced
set grid
set yrange [0:*]
plot for [i=1:words(names)] datafile index (i-1) using 1:2 with linespoints lw 2 pt 7 title word(names, i)
