print("RaftBenchmark")
