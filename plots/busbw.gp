# Bus bandwidth against message size per collective, log x, with the memcpy ceiling of bench --calibrate when the
# inputs have one. Variables: datafile (nblocks blocks separated by two blank lines, each a header line "bytes"
# "TITLE" then columns: bytes busbw_gbps), nblocks, roof (GB/s per rank; 0: none), rooftitle, outfile, fmt. Series
# titles are read from the data (columnheader), never from the command line.
if (!exists("fmt")) fmt = 'svg'
if (!exists("roof")) roof = 0
if (fmt eq 'png') { set terminal pngcairo noenhanced size 900,560 font ",10" } else { set terminal svg noenhanced size 900,560 dynamic font ",10" background rgb 'white' }
set output outfile
set title "busbw per collective (nccl-tests convention)"
set xlabel "message size (bytes per rank)"
set ylabel "busbw (GB/s, median)"
set logscale x 2
set format x "%.0b%B"
set key top left noenhanced
set grid
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
if (roof > 0) {
    plot for [i=1:nblocks] datafile index (i-1) using 1:2 with linespoints lw 2 pt 7 title columnheader(2), \
         roof with lines dt 2 lw 2 lc rgb "black" title rooftitle
} else {
    plot for [i=1:nblocks] datafile index (i-1) using 1:2 with linespoints lw 2 pt 7 title columnheader(2)
}
