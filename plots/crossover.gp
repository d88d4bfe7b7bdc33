# tp2ep / agrs step-time ratio against top_k, one line per family of configurations (index blocks of datafile,
# labels in `labels`, space-separated, one per block). Below 1: tp2ep is faster. Variables: datafile, outfile,
# fmt, nblocks, labels.
if (!exists("fmt")) fmt = 'svg'
if (fmt eq 'png') { set terminal pngcairo size 900,560 font ",10" } else { set terminal svg size 900,560 dynamic font ",10" background rgb 'white' }
set output outfile
set title "tp2ep / agrs step time against top_k (below 1: tp2ep faster)" noenhanced
set xlabel "top_k" noenhanced
set ylabel "step time ratio tp2ep / agrs (medians)"
set key outside right top noenhanced
set grid
set xtics 1
set yrange [*:*]
plot for [i=0:nblocks-1] datafile index i using 1:2 with linespoints lw 2 pt 7 title word(labels, i + 1), \
     1 with lines dt 2 lc rgb "#777777" title "equal"
