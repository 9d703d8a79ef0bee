print("teal-demo")
