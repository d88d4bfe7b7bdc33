# A metric over the nightly history. Variables: datafile (nblocks blocks, each a header line "utc" "TITLE" then
# columns: utc metric), nblocks, ylab, title_ (what is followed: the configuration), xfmt (the time format that fits
# the span: hours for one night), xlab, outfile, fmt.
if (!exists("fmt")) fmt = 'svg'
if (fmt eq 'png') { set terminal pngcairo noenhanced size 900,560 font ",10" } else { set terminal svg noenhanced size 900,560 dynamic font ",10" background rgb 'white' }
set output outfile
set title title_ noenhanced
set xdata time
set timefmt "%Y-%m-%dT%H:%M:%SZ"
set format x xfmt
set xtics rotate by -30
set xlabel xlab noenhanced
set ylabel ylab noenhanced
set key outside right top noenhanced
set grid
set yrange [0:*]
set offsets graph 0.03, graph 0.03, 0, 0
plot for [i=1:nblocks] datafile index (i-1) using 1:2 with linespoints pt 7 title columnheader(2)
