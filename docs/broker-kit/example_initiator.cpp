// A minimal QuickFIX C++ initiator for the CCERX gateway: the broker kit's settings file and
// data dictionary in a stock FIX engine.
//
//   g++ -std=c++14 -o example_initiator example_initiator.cpp -lquickfix -lpthread
//   CCERX_PASSWORD=demo01 ./example_initiator initiator.cfg EMIT01 1 15 60.00 CCER-AFF
//
// Arguments: settings file, Account, Side (1 buy, 2 sell), OrderQty (whole tonnes), Price
// (CNY), Symbol. It logs on (Username 553 = SenderCompID, Password 554 from $CCERX_PASSWORD,
// added in toAdmin), subscribes to the book (MarketDataRequest), sends one limit order, and
// cancels what is left of it after its first fill. It logs out when the order is done
// (filled, cancelled, rejected), when a cancel is refused, or when QuickFIX rejects a message
// of the gateway (one that does not fit the dictionary: that should never happen). Every
// message in and out is printed, one line each, SOH shown as '|', the password masked.
// Exit status 0 after a clean logout.
//
// Built against QuickFIX C++ 1.15 (Debian: libquickfix-dev), whose headers declare dynamic
// exception specifications: hence -std=c++14 and QF_THROW below.
#include <quickfix/Application.h>
#include <quickfix/FileLog.h>
#include <quickfix/FileStore.h>
#include <quickfix/Message.h>
#include <quickfix/Session.h>
#include <quickfix/SessionSettings.h>
#include <quickfix/SocketInitiator.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

#if __cplusplus < 201703L
#define QF_THROW(...) throw(__VA_ARGS__)
#else
#define QF_THROW(...)
#endif

namespace {

std::mutex print_lock;

void print(const char *direction, const FIX::Message &message) {
  std::string text = message.toString();
  for (char &c : text)
    if (c == '\x01') c = '|';
  const std::string password = "|554=";
  auto at = text.find(password);
  if (at != std::string::npos) {
    auto end = text.find('|', at + password.size());
    text.replace(at + password.size(), end - at - password.size(), "****");
  }
  std::lock_guard<std::mutex> hold(print_lock);
  std::cout << direction << ' ' << text << std::endl;
}

std::string field(const FIX::FieldMap &message, int tag) {
  return message.isSetField(tag) ? message.getField(tag) : "";
}

class Broker : public FIX::Application {
 public:
  Broker(std::string account, std::string side, std::string qty, std::string price,
         std::string symbol)
      : account_(account), side_(side), qty_(qty), price_(price), symbol_(symbol),
        cl_ord_id_("QF" + std::to_string(std::time(nullptr))) {}

  std::atomic<bool> finished{false};
  std::atomic<bool> clean{false};

  void onCreate(const FIX::SessionID &) override {}

  void onLogon(const FIX::SessionID &session) override {
    session_ = session;
    FIX::Message subscribe;
    subscribe.getHeader().setField(FIX::MsgType("V"));
    subscribe.setField(262, "BOOK-" + symbol_);  // MDReqID
    subscribe.setField(263, "1");                 // snapshot + updates
    subscribe.setField(264, "0");                 // full book
    FIX::Group entry_types(267, 269);
    for (const char *type : {"0", "1", "2"}) {    // bid, offer, trade
      entry_types.setField(269, type);
      subscribe.addGroup(entry_types);
    }
    FIX::Group related(146, 55);
    related.setField(55, symbol_);
    subscribe.addGroup(related);
    FIX::Session::sendToTarget(subscribe, session);

    FIX::Message order;
    order.getHeader().setField(FIX::MsgType("D"));
    order.setField(11, cl_ord_id_);
    order.setField(1, account_);
    order.setField(55, symbol_);
    order.setField(54, side_);
    order.setField(FIX::TransactTime());
    order.setField(38, qty_);
    order.setField(40, "2");                      // limit
    order.setField(44, price_);
    FIX::Session::sendToTarget(order, session);
  }

  void onLogout(const FIX::SessionID &) override { finished = true; }

  void toAdmin(FIX::Message &message, const FIX::SessionID &session) override {
    if (field(message.getHeader(), 35) == "A") {
      const char *password = std::getenv("CCERX_PASSWORD");
      message.setField(553, session.getSenderCompID().getValue());  // Username
      if (password != nullptr) message.setField(554, password);     // Password
    }
    print("OUT", message);
    // Our engine refused a message from the gateway (it does not fit the dictionary): this
    // should never happen, so stop rather than trade on.
    if (field(message.getHeader(), 35) == "3") logout();
  }

  void toApp(FIX::Message &message, const FIX::SessionID &) QF_THROW(FIX::DoNotSend) override {
    print("OUT", message);
  }

  void fromAdmin(const FIX::Message &message, const FIX::SessionID &)
      QF_THROW(FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue,
               FIX::RejectLogon) override {
    print("IN", message);
    if (field(message.getHeader(), 35) == "5" && logout_sent_) clean = true;
  }

  void fromApp(const FIX::Message &message, const FIX::SessionID &)
      QF_THROW(FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue,
               FIX::UnsupportedMessageType) override {
    print("IN", message);
    const std::string type = field(message.getHeader(), 35);
    if (type == "9") {
      logout();
      return;
    }
    if (type != "8" || field(message, 11) == "" || field(message, 150) == "I") return;
    const std::string exec_type = field(message, 150), status = field(message, 39);
    if (exec_type == "F" && status == "1" && !cancel_sent_) {
      cancel_sent_ = true;
      FIX::Message cancel;
      cancel.getHeader().setField(FIX::MsgType("F"));
      cancel.setField(41, cl_ord_id_);
      cancel.setField(37, field(message, 37));
      cancel.setField(11, cl_ord_id_ + "-C");
      cancel.setField(55, symbol_);
      cancel.setField(54, side_);
      cancel.setField(FIX::TransactTime());
      FIX::Session::sendToTarget(cancel, session_);
    } else if (status == "2" || status == "4" || status == "8" || status == "C") {
      logout();
    }
  }

 private:
  void logout() {
    if (logout_sent_.exchange(true)) return;
    FIX::Session *session = FIX::Session::lookupSession(session_);
    if (session != nullptr) session->logout("done");
  }

  std::string account_, side_, qty_, price_, symbol_, cl_ord_id_;
  FIX::SessionID session_;
  std::atomic<bool> cancel_sent_{false};
  std::atomic<bool> logout_sent_{false};
};

}  // namespace

int main(int argc, char **argv) {
  if (argc != 7) {
    std::cerr << "usage: " << argv[0] << " SETTINGS ACCOUNT SIDE QTY PRICE SYMBOL\n";
    return 64;
  }
  try {
    FIX::SessionSettings settings(argv[1]);
    Broker broker(argv[2], argv[3], argv[4], argv[5], argv[6]);
    FIX::FileStoreFactory store(settings);
    FIX::FileLogFactory log(settings);
    FIX::SocketInitiator initiator(broker, store, settings, log);
    initiator.start();
    for (int i = 0; i < 300 && !broker.finished; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    initiator.stop();
    return broker.clean ? 0 : 1;
  } catch (const std::exception &e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 2;
  }
}
