set terminal pngcairo size 1400,700 font "DejaVu Sans,10"
set output 'ratios.png'
set title "Ratio to HAProxy (1 = HAProxy; log scale), medians of 5 run(s), 2026-12-05 09:06 UTC\n↓ = lower is better; hatched: certgate's target"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y 2
set yrange [0.0625:16]
set ytics ("1/16" 0.0625, "1/8" 0.125, "1/4" 0.25, "1/2" 0.5, "1" 1, "2" 2, "4" 4, "8" 8, "16" 16)
set grid ytics
set key top left
set xtics font ",10"
set bmargin 5
set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 2 lc rgb "black"
plot 'ratios.dat' using 2:xtic(1) title 'nginx' lc rgb '#2e8b57', 'ratios.dat' using 3:xtic(1) title 'certgate' lc rgb '#8a2be2', 'ratios.dat' using 4 title 'certgate target' fill pattern 4 lc rgb '#8a2be2'
