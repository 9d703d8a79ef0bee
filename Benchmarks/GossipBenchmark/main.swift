print("GossipBenchmark")
