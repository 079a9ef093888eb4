module tidepool/bench/go

go 1.19
