// TealRaftSim: deterministic simulation of RaftCore clusters.
