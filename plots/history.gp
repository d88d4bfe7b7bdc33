# A metric over the nightly history. Variables: datafile (one block per series, columns: utc metric),
# names (space-separated series titles), ylab, outfile, fmt.
if (!exists("fmt")) fmt = 'svg'
if (fmt eq 'png') { set terminal pngcairo size 900,560 font ",10" } else { set terminal svg size 900,560 dynamic font ",10" background rgb 'white' }
set output outfile
set title "history" noenhanced
set xdata time
set timefmt "%Y-%m-%dT%H:%M:%SZ"
set format x "%m-%d\n%H:%M"
set xlabel "run (UTC)"
set ylabel ylab noenhanced
set key outside right top noenhanced
set grid
set yrange [0:*]
plot for [i=1:words(names)] datafile index (i-1) using 1:2 with linespoints pt 7 title word(names, i)
