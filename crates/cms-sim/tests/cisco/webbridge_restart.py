#####
#### Cisco Meeting Server ####
#### Webbridge restart ####
#### Workaround for CSCvt73723 ####
#####
# Cisco's script from TAC document 215662 (../shared/reference), with only
# its indentation repaired (the published page lost it) and the quotes of
# its two log messages balanced. The test harness points the marked lines
# at the simulator, nothing else: this is the procedure operators run today.
#
# Tested with python 3.7.4
#-----
#----- Libraries to import -----
#-----
import paramiko
import time
import datetime
#-----
#----- Deployment parameters to change -----
#-----
# WB Inventory - just extend or modify the below to match your deployment requirements.
# Enter the MMP IP of the server (can differ from interface webbridge service is running)
webbridges={1:"127.0.0.1",2:"127.0.0.1",3:"127.0.0.1",4:"127.0.0.1"}  # harness: servers
mmp_port = 22  # harness: port

mmp_username = "admin" # MMP username
mmp_password = "password" # MMP password
#-----
def mmp_webbridge_restart(mmp_address,uname,pword):
    conn = paramiko.SSHClient()
    conn.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        conn.connect(mmp_address, mmp_port, uname, pword)
        stdin, stdout, stderr = conn.exec_command('webbridge restart')
        time.sleep(1)
        conn.close()
        print_log_message("Webbridge on server: " + mmp_address + " restarted successfully")
    except Exception as error:
        print_log_message("Failed to restart webbridge on server " + mmp_address + ". Error:")
        print_log_message(str(error))
        pass
def print_log_message(message):
    time_stamp = datetime.datetime.now(datetime.timezone.utc)
    time_stamp = str(time_stamp)
    file = open('webbridge_restart_logs.txt', 'a')
    file.write(time_stamp + " " + message + "\n")
    file.close()
if __name__ == '__main__':
    for wb in webbridges:
        mmp_webbridge_restart(webbridges[wb], mmp_username, mmp_password)
#####
