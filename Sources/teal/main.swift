print("teal")
