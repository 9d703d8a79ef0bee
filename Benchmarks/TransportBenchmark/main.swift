print("TransportBenchmark")
